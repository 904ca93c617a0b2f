"""Runs: list and read them (state, job, trials, attempts, events, params) and cancel them.

A user token sees its project's runs, an admin token every run; another
project's run is 403, an unknown run 404.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from mlrt.service import views
from mlrt.service.routes.common import Parts, StoreDep, User, spec_of, visible_run
from mlrt.states import RunState

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])


@router.get("")
def list_runs(
    who: User,
    store: StoreDep,
    limit: int = 50,
    state: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI reads the default)
    job: str | None = None,
) -> list[dict[str, Any]]:
    project = None if who.kind == "admin" else who.project
    runs = store.list_runs(limit=limit, states=state, job_id=job, project=project)
    return [r.model_dump(mode="json") for r in runs]


@router.get("/{run_id}")
def get_run(run_id: str, who: User, store: StoreDep) -> dict[str, Any]:
    return visible_run(store, who, run_id).model_dump(mode="json")


@router.get("/{run_id}/job")
def get_job(run_id: str, who: User, store: StoreDep) -> dict[str, Any]:
    return views.job_view(store.get_job(visible_run(store, who, run_id).job_id))


@router.get("/{run_id}/trials")
def trials(run_id: str, who: User, store: StoreDep) -> list[dict[str, Any]]:
    visible_run(store, who, run_id)
    return [t.model_dump(mode="json") for t in store.trials(run_id)]


@router.get("/{run_id}/attempts")
def attempts(run_id: str, who: User, store: StoreDep) -> list[dict[str, Any]]:
    spec = spec_of(store, visible_run(store, who, run_id))
    return [views.attempt_view(a, spec) for a in store.attempts(run_id)]


@router.get("/{run_id}/events")
def events(run_id: str, who: User, store: StoreDep) -> list[dict[str, Any]]:
    visible_run(store, who, run_id)
    return [e.model_dump(mode="json") for e in store.events(run_id)]


@router.get("/{run_id}/params")
def params(run_id: str, who: User, store: StoreDep) -> dict[str, str]:
    visible_run(store, who, run_id)
    return store.params(run_id)


@router.post("/{run_id}/cancel")
def cancel(run_id: str, who: User, parts: Parts) -> dict[str, Any]:
    """Ask the leader to stop the run (SIGTERM, then SIGKILL after its grace period)."""
    store = parts.store
    run = visible_run(store, who, run_id)
    if not RunState(run.state).is_terminal():
        store.update_run(run_id, cancel_requested=True)
        store.add_event(run_id, f"cancel requested by {who.user}")
        parts.wake()
    return store.get_run(run_id).model_dump(mode="json")
