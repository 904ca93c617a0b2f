"""Tracking routes for workers (the SDK with ``MLRT_TRACKING_URI=http(s)://...``): write the
metrics and params of the token's own run. Any other token or run is 403."""

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, Field

from mlrt.service.auth import Principal
from mlrt.service.routes.common import Anyone, Parts, StoreDep

router = APIRouter(prefix="/api/v1/runs", tags=["tracking"])

MAX_POINTS = 50_000
"""The most metric points one request may carry (413 beyond)."""


class MetricsBody(BaseModel):
    points: list[tuple[str, int, float, float]] = Field(description="[key, step, value, unix time] per point.")
    batch: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The batch's id (the SDK sends a uuid4): a batch already stored for the run is not stored again.",
    )


class DiscardBody(BaseModel):
    keys: list[str]
    from_step: int


def tracked(who: Principal, run_id: str) -> None:
    """403 unless ``who`` is the worker token of ``run_id``."""
    if not who.can_track(run_id):
        raise HTTPException(403, f"this token cannot record data of run {run_id!r}")


@router.post("/{run_id}/tracking/metrics", status_code=204)
def track_metrics(run_id: str, body: MetricsBody, who: Anyone, parts: Parts) -> Response:
    tracked(who, run_id)
    if len(body.points) > MAX_POINTS:
        raise HTTPException(413, f"at most {MAX_POINTS} points per request")
    count = parts.store.insert_metrics(run_id, body.points, batch_id=body.batch)
    parts.telemetry.metric_points.inc(count)
    return Response(status_code=204)


@router.get("/{run_id}/tracking/max-steps")
def track_max_steps(run_id: str, who: Anyone, store: StoreDep) -> dict[str, int]:
    tracked(who, run_id)
    return store.max_steps(run_id)


@router.post("/{run_id}/tracking/params", status_code=204)
def track_params(run_id: str, body: dict[str, Any], who: Anyone, store: StoreDep) -> Response:
    tracked(who, run_id)
    store.log_params(run_id, body)
    return Response(status_code=204)


@router.post("/{run_id}/tracking/discard", status_code=204)
def track_discard(run_id: str, body: DiscardBody, who: Anyone, store: StoreDep) -> Response:
    tracked(who, run_id)
    store.delete_metrics(run_id, body.keys, body.from_step)
    return Response(status_code=204)
