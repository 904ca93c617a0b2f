"""What the routes share: the service's parts, who a request acts as, and the runs it may see.

:func:`mlrt.service.api.create_app` keeps a :class:`ServiceParts` in ``app.state.parts``;
a route asks for it (or only for the store) with the ``Parts`` and ``StoreDep``
annotations. ``User`` and ``Anyone`` are the two authorizations: a user or admin
token, or any token (worker tokens included: the tracking routes check the run).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mlrt.service.auth import Principal
from mlrt.service.guard import principal_of
from mlrt.service.loop import ServiceLoop
from mlrt.service.telemetry import Telemetry
from mlrt.store import Store
from mlrt.store.models import Run


@dataclasses.dataclass(frozen=True)
class ServiceParts:
    """The store the API serves, the loop woken on submissions and cancels (None: API only)
    and the service's telemetry."""

    store: Store
    loop: ServiceLoop | None
    telemetry: Telemetry

    def wake(self) -> None:
        """Ask the reconcile loop for a pass now (nothing when the service is API only)."""
        if self.loop is not None:
            self.loop.wake()


# The dependencies below do no I/O: declared ``async``, FastAPI runs them on the event loop. A
# plain ``def`` dependency is run in the thread pool, a hand-off each (three a request here).


async def service_parts(request: Request) -> ServiceParts:
    return request.app.state.parts


async def service_store(request: Request) -> Store:
    return request.app.state.parts.store


Parts = Annotated[ServiceParts, Depends(service_parts)]
StoreDep = Annotated[Store, Depends(service_store)]

# Declared for the OpenAPI schema (the /docs "Authorize" button); Guard did the checking.
bearer = HTTPBearer(auto_error=False, description="A token of `mlrt tokens create`, or a run's worker token.")


async def principal(
    request: Request, _shown: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """Who the request acts as: :class:`mlrt.service.guard.Guard` authenticated it before its body was read."""
    found = principal_of(request.scope)
    if found is None:  # only /api/ routes are authenticated, and only they ask
        raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return found


async def user(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """A user or admin token: a worker token is 403 here."""
    if who.kind == "worker":
        raise HTTPException(403, "a worker token can only record metrics and params of its own run")
    return who


User = Annotated[Principal, Depends(user)]
Anyone = Annotated[Principal, Depends(principal)]


def visible_run(store: Store, who: Principal, run_id: str) -> Run:
    """The run ``run_id`` (404 when there is none), 403 when it belongs to a project ``who`` cannot see."""
    run = store.get_run(run_id)
    if not who.can_see(store.projects_of([run_id]).get(run_id)):
        raise HTTPException(403, f"run {run_id!r} belongs to another project")
    return run


def spec_of(store: Store, run: Run) -> dict[str, Any]:
    """The resolved ``spec`` of the run's job."""
    return store.get_job(run.job_id).spec_resolved["spec"]


class SpecProblems(Exception):
    """A submitted spec cannot run (answered ``status``, 422 unless said otherwise, with one line per problem)."""

    def __init__(self, problems: list[str], status: int = 422):
        self.problems = problems
        self.status = status

    @classmethod
    def of(cls, exc: Exception) -> SpecProblems:
        """The answer to a :class:`mlrt.spec.SpecError`: 413 for a spec over its size limit."""
        from mlrt.spec import SpecTooLarge

        return cls(exc.problems, 413 if isinstance(exc, SpecTooLarge) else 422)
