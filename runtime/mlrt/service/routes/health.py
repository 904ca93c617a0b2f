"""Health routes, open to anyone: ``/healthz`` (the process answers), ``/readyz`` (it can serve)
and ``/metrics`` (Prometheus)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlrt.service.routes.common import Parts
from mlrt.store.engine import current_revision
from mlrt.store.migrations import HEAD_REVISION

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(parts: Parts) -> JSONResponse:
    """200 ``ready``; 503 ``degraded`` with ``last_error`` while the database cannot be
    used or reconcile passes fail (it turns ready by itself when they succeed again)."""
    loop = parts.loop
    leader = bool(loop and loop.leader.held)
    try:
        revision = current_revision(parts.store.engine)
    except Exception as exc:
        line = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        error = f"database unreachable: {line}"
        return JSONResponse(status_code=503, content={"status": "degraded", "leader": leader, "last_error": error})
    if revision != HEAD_REVISION:
        return JSONResponse(status_code=503, content={"status": f"schema at {revision}, not {HEAD_REVISION}"})
    if loop is not None and loop.error:
        return JSONResponse(status_code=503, content={"status": "degraded", "leader": leader, "last_error": loop.error})
    return JSONResponse({"status": "ready", "leader": leader})


@router.get("/metrics")
def prometheus(parts: Parts) -> Response:
    return Response(generate_latest(parts.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
