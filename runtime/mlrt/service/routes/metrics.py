"""A run's metrics as users read them: every point, a summary per key, the latest values,
and one key's last value across several runs (the trials of a tuning job).

Workers write metrics through :mod:`mlrt.service.routes.tracking`.
"""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response, StreamingResponse

from mlrt.metric_json import points_json
from mlrt.service.routes.common import StoreDep, User, visible_run

router = APIRouter(prefix="/api/v1", tags=["runs"])


@router.get("/runs/{run_id}/metrics", response_model=list[dict[str, Any]])
def metrics(
    run_id: str,
    who: User,
    store: StoreDep,
    key: str | None = None,
    every: Annotated[int, Query(ge=1, le=2**31 - 1)] = 1,
) -> Response:
    """The points of a run (of one ``key``), by key and step; ``every=N`` keeps every Nth point
    of each key. Streamed as they are read from the database."""
    visible_run(store, who, run_id)
    points = store.iter_metric_points(run_id, key, every=every)
    return StreamingResponse(points_json(points), media_type="application/json")


@router.get("/runs/{run_id}/metrics/summary")
def metric_summary(run_id: str, who: User, store: StoreDep) -> list[dict[str, Any]]:
    """Per metric key: points, last, min and max, aggregated by the database."""
    visible_run(store, who, run_id)
    return store.metric_summary(run_id)


@router.get("/runs/{run_id}/metrics/latest")
def latest_metrics(run_id: str, who: User, store: StoreDep) -> dict[str, float]:
    visible_run(store, who, run_id)
    return store.latest_metrics(run_id)


@router.get("/last-values")
def last_values(who: User, store: StoreDep, key: str, run: Annotated[list[str], Query()]) -> dict[str, float]:
    """The last value of metric ``key`` for each of several runs (trials of a tuning job)."""
    projects = store.projects_of(run)
    if any(not who.can_see(projects.get(r)) for r in run):
        raise HTTPException(403, "some of these runs belong to another project")
    return store.last_values(run, key)
