"""Source bundles: ``POST /api/v1/sources`` (upload), ``GET /api/v1/runs/{run_id}/source`` and, for
the run's own pods, ``GET /api/v1/runs/{run_id}/tracking/source``.

``mlrt submit --server`` uploads a ``command:`` job's code as a bundle
(:mod:`mlrt.bundles`) before it submits the spec with the bundle's digest.
The upload is checked here exactly as unpacking checks it (regular files,
plain relative paths, the size and file limits), so a hostile tarball is a
422 that leaves nothing behind; an accepted one is kept once per digest
(:mod:`mlrt.sources`). Nobody fetches a bundle by digest: a run's code is read
through the run, by those who may see the run, or by the run's own workers
(its worker token: a pod's init container, :mod:`mlrt.source_fetch`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from mlrt.service.routes.common import Anyone, Parts, StoreDep, User, visible_run

router = APIRouter(prefix="/api/v1", tags=["sources"])


@router.post("/sources", status_code=201)
async def upload(request: Request, _who: User, parts: Parts) -> dict[str, Any]:
    """Keep the gzipped tar in the body as a source bundle; its digest, files and size back."""
    from starlette.concurrency import run_in_threadpool

    from mlrt import sources
    from mlrt.bundles import Bundle, BundleError

    data = await request.body()  # the guard bounds it (MLRT_MAX_REQUEST_BYTES)
    try:
        bundle = await run_in_threadpool(Bundle.of, data)
        await run_in_threadpool(sources.keep, parts.store, bundle)
    except BundleError as exc:
        raise HTTPException(422, f"source: {exc}") from None
    return {"digest": bundle.digest, "files": bundle.files, "size": bundle.size}


@router.get("/runs/{run_id}/source")
def run_source(run_id: str, who: User, store: StoreDep) -> Response:
    """The source bundle a run ran (``application/gzip``); 404 when the run has none."""
    from mlrt import sources
    from mlrt.bundles import BundleError

    digest = sources.run_digest(visible_run(store, who, run_id).record)
    if digest is None:
        raise HTTPException(404, f"run {run_id!r} has no source bundle (not a command: job)")
    try:
        data = sources.load(store, digest)
    except BundleError as exc:
        raise HTTPException(404, str(exc)) from None
    return Response(data, media_type="application/gzip", headers={"X-Source-Digest": digest})


@router.get("/runs/{run_id}/tracking/source")
def worker_source(run_id: str, who: Anyone, store: StoreDep) -> Response:
    """The run's source bundle for its own pods (:mod:`mlrt.source_fetch`): the run's worker token only."""
    from mlrt import sources
    from mlrt.bundles import BundleError
    from mlrt.service.routes.tracking import tracked

    tracked(who, run_id)
    digest = sources.run_digest(store.get_run(run_id).record)
    if digest is None:
        raise HTTPException(404, f"run {run_id!r} has no source bundle")
    try:
        return Response(sources.load(store, digest), media_type="application/gzip")
    except BundleError as exc:
        raise HTTPException(404, str(exc)) from None
