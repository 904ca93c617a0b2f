"""Runs: list and read them (state, job, trials, attempts, events, params) and cancel them.

A user token sees its project's runs, an admin token every run; another
project's run is 403, an unknown run 404.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from mlrt.run_search import RunQuery, query_from_text
from mlrt.service import views
from mlrt.service.routes.common import Parts, StoreDep, User, spec_of, visible_run
from mlrt.states import RunState

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])


async def run_query(  # no I/O: on the event loop
    who: User,
    limit: int = 50,
    offset: int = 0,
    state: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI reads the default)
    label: Annotated[list[str], Query(description="KEY=VALUE of the job's labels")] = [],  # noqa: B006
    name: str | None = None,
    where: Annotated[list[str], Query(description="METRIC OP NUMBER, e.g. validation_accuracy > 0.9")] = [],  # noqa: B006
    sort: str = "-created_at",
    job: str | None = None,
    top_level: bool = False,
) -> RunQuery:
    """The query string of a run search (see :mod:`mlrt.run_search`); a user token searches
    its own project's runs only. A malformed value is 422 naming it."""
    query, problems = query_from_text(
        states=state,
        labels=label,
        name=name,
        where=where,
        sort=sort,
        limit=limit,
        offset=offset,
        job_id=job,
        project=None if who.kind == "admin" else who.project,
        top_level=top_level,
    )
    if query is None:
        raise HTTPException(422, "; ".join(problems))
    return query


Search = Annotated[RunQuery, Depends(run_query)]


@router.get("")
def list_runs(query: Search, store: StoreDep, response: Response) -> list[dict[str, Any]]:
    """The matching runs, one page of them; ``X-Total-Count`` says how many match in all."""
    page = store.find_runs(query)
    response.headers["X-Total-Count"] = str(page.total)
    return [r.model_dump(mode="json") for r in page.runs]


@router.get("/search")
def search_runs(query: Search, store: StoreDep) -> dict[str, Any]:
    """One page of matching runs with the total, each run's last metric values, params and job."""
    return store.find_runs(query).to_dict()


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
