"""The controller service's HTTP API (FastAPI; the schema is at ``/openapi.json``, docs at ``/docs``).

Every ``/api/v1`` route needs ``Authorization: Bearer <token>`` (see
:mod:`mlrt.service.auth`). A missing or unknown token is 401; a user token
acting on another project's job, or a worker token used outside its run or
on a user route, is 403. Refused requests change nothing.

User routes (``user`` and ``admin`` tokens): submit and validate a spec,
list and read runs (state, attempts, events, params, metrics, artifacts,
logs, reports) and cancel. Tracking routes (``worker`` tokens, the SDK's
``MLRT_TRACKING_URI=http(s)://...``): write metrics and params of the
token's own run. The web UI is at ``/ui`` (:mod:`mlrt.ui`; a login page takes a
user or admin token once and keeps it in a cookie). Health: ``/healthz`` (the process answers), ``/readyz``
(the database answers, its schema is current and reconcile passes succeed;
else 503 ``degraded`` with the error), ``/metrics`` (Prometheus).

The token is checked before the request body is read, and a body over
``MLRT_MAX_REQUEST_BYTES`` (default 8 MiB) is 413 (:mod:`mlrt.service.guard`).
A spec over its size limit is 413, other spec problems 422, one line each.
Every response has an ``X-Request-Id`` header; an unexpected error is a 500
``{"detail": "internal error", "request_id": ...}`` whose traceback the log
holds under that id.
"""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mlrt import __version__
from mlrt.service.guard import Guard, max_request_bytes
from mlrt.service.loop import ServiceLoop
from mlrt.service.routes import ROUTERS
from mlrt.service.routes.common import ServiceParts, SpecProblems
from mlrt.service.telemetry import Telemetry
from mlrt.store import NotFound, Store
from mlrt.ui.app import create_ui


def create_app(store: Store, loop: ServiceLoop | None, telemetry: Telemetry, *, max_body: int | None = None) -> FastAPI:
    """The API over ``store``; ``loop`` is woken on submissions and cancels (None: API only);
    ``max_body``: the largest request body in bytes (default: :func:`max_request_bytes`).
    The routes are in :mod:`mlrt.service.routes`, one router per noun."""
    app = FastAPI(
        title="mlrt controller",
        version=__version__,
        description=__doc__.split("\n\n", 1)[1],
    )
    app.state.parts = ServiceParts(store, loop, telemetry)

    def counted(method: str, status: int) -> None:
        telemetry.requests.labels(method, str(status)).inc()

    app.add_middleware(Guard, store=store, limit=max_request_bytes() if max_body is None else max_body, counted=counted)

    @app.exception_handler(SpecProblems)
    async def spec_problems(_request: Request, exc: SpecProblems):
        return JSONResponse(status_code=exc.status, content={"detail": exc.problems[0], "problems": exc.problems})

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound):
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    for router in ROUTERS:
        app.include_router(router)
    app.mount("/ui", create_ui(store, login_required=True, wake=app.state.parts.wake))
    return app
