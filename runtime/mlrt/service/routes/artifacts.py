"""A run's artifacts: the list, one artifact's content, and pushing staged output to S3."""

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response, StreamingResponse

from mlrt.service.routes.common import StoreDep, User, visible_run
from mlrt.store import Store

router = APIRouter(prefix="/api/v1/runs", tags=["artifacts"])


@router.get("/{run_id}/artifacts")
def artifacts(run_id: str, who: User, store: StoreDep) -> list[dict[str, Any]]:
    visible_run(store, who, run_id)
    return [a.model_dump(mode="json") for a in store.artifacts(run_id)]


@router.get("/{run_id}/artifacts/{path:path}")
def artifact(run_id: str, path: str, who: User, store: StoreDep) -> Response:
    """The content of one registered artifact (only registered paths are served)."""
    visible_run(store, who, run_id)
    return artifact_content(store, run_id, path)


def artifact_content(store: Store, run_id: str, path: str) -> Response:
    """The content of the artifact ``path`` of ``run_id`` (400 for a path leaving the run, 404
    for one not registered or gone), with its sha256 in ``X-Sha256``. The caller checked that
    the asker may see the run (the API's and the web UI's download)."""
    from mlrt.artifacts import relative_path_problem

    problem = relative_path_problem(path)
    if problem:
        raise HTTPException(400, f"artifact path {path!r} {problem}: it must stay inside the run")
    row = next((a for a in store.artifacts(run_id) if a.path == path), None)
    if row is None:
        raise HTTPException(404, f"run {run_id!r} has no artifact {path!r}")
    headers = {"X-Sha256": row.sha256, "Content-Length": str(row.size)}
    if row.uri.startswith("s3://"):
        from mlrt import s3

        return StreamingResponse(s3.open_object(row.uri), media_type="application/octet-stream", headers=headers)
    from fastapi.responses import FileResponse

    from mlrt.artifacts import walk_root
    from mlrt.submission import local_prefix

    run = store.get_run(run_id)
    root = walk_root(local_prefix(run.output_uri, run_id) / "output")
    file = Path(row.uri.removeprefix("file://")).resolve()
    if root is None or not file.is_relative_to(root) or not file.is_file():
        raise HTTPException(404, f"artifact {path!r} is no longer on the controller")
    headers.pop("Content-Length")  # FileResponse streams the file and sets it
    return FileResponse(file, media_type="application/octet-stream", headers=headers)


@router.post("/{run_id}/artifacts/push")
def push_artifacts(run_id: str, who: User, store: StoreDep) -> list[dict[str, Any]]:
    """Upload a finished run's staged output (kept when it ended "output not uploaded") to its
    ``s3://`` output and register the artifacts; the run keeps its state. 409 when there is
    nothing to push on this controller, 502 when S3 still fails after the retries."""
    from mlrt import s3
    from mlrt.artifacts import PushRefused, push

    visible_run(store, who, run_id)
    try:
        found = push(store, run_id)
    except PushRefused as exc:
        raise HTTPException(409, str(exc)) from None
    except (s3.UploadFailed, ValueError) as exc:
        raise HTTPException(502, f"output not uploaded: {exc}") from None
    return [a.model_dump(mode="json") for a in found]
