"""``/api/v1/runs/{run_id}/logs/{attempt}/{rank}``: a worker's output, a part at a time."""

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse, Response

from mlrt.service.routes.common import StoreDep, User, visible_run

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])

LOG_CHUNK = 1 << 20
"""The most bytes of output one request answers."""


@router.get("/{run_id}/logs/{attempt}/{rank}", response_class=PlainTextResponse)
def logs(run_id: str, attempt: int, rank: int, who: User, store: StoreDep, offset: int = 0) -> Response:
    """Bytes of worker ``rank``'s output from position ``offset`` (at most 1 MiB); the
    ``X-Next-Offset`` header says where to continue. Positions count the worker's output,
    so they stay valid when a log past its size limit is cut (:mod:`mlrt.logfile`):
    ``X-Output-Start`` says where the part's bytes begin (after ``offset`` when output there
    was cut) and ``X-Cut-After: 1`` that the output right after the part was cut. Served from
    the database (:mod:`mlrt.logship`), so every replica answers the same."""
    from mlrt.logship import read_log

    visible_run(store, who, run_id)
    row = next((a for a in store.attempts(run_id) if a.number == attempt), None)
    workers = {w["rank"] for w in (row.request.get("workers", []) if row else [])}
    if rank not in workers:
        raise HTTPException(404, f"run {run_id!r} has no worker {rank} in attempt {attempt}")
    part = read_log(store, run_id, attempt, rank, max(offset, 0), LOG_CHUNK)
    headers = {
        "X-Next-Offset": str(part.start + len(part.data)),
        "X-Output-Start": str(part.start),
        "X-Cut-After": "1" if part.cut_after else "0",
    }
    return Response(part.data, media_type="text/plain", headers=headers)
