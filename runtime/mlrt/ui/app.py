"""The UI application: Jinja2 rendering, the pages of :data:`mlrt.ui.PAGES`, static files.

:func:`create_ui` builds it over a store; the controller service mounts it at
``/ui`` (:func:`mlrt.service.api.create_app`) and ``mlrt ui`` serves it alone
(:func:`standalone_app`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from mlrt import __version__, ui
from mlrt.cli.render import number, seconds
from mlrt.store import Store
from mlrt.ui.auth import FRAGMENT_HEADER, PREFIX, LoginNeeded, UiContext, csrf_token

HERE = Path(__file__).parent
LOOPBACK = ("127.0.0.1", "localhost")

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value a user gave (names, labels, params, log lines) is escaped
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters.update(
    number=number,
    seconds=lambda value: seconds(value) or "",
    when=lambda value: value.strftime("%Y-%m-%d %H:%M:%S") if value else "",
    size=lambda value: f"{value:,}",
)


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """``template`` rendered with ``context``; every template also gets ``request``, ``prefix``
    (``/ui``), ``csrf_token()``, ``login_required`` and ``version``."""
    ctx: UiContext = request.app.state.ui
    values = {
        "request": request,
        "prefix": PREFIX,
        "csrf_token": lambda: csrf_token(ctx, request),
        "login_required": ctx.login_required,
        "version": __version__,
        **context,
    }
    return HTMLResponse(_environment.get_template(template).render(values), status_code=status)


def create_ui(store: Store, *, login_required: bool, wake: Callable[[], None] | None = None) -> FastAPI:
    """The UI over ``store``, to be served at ``/ui``. ``login_required``: viewers sign in with an
    API token (the controller service); else the one local user (``mlrt ui``). ``wake`` asks the
    service's reconcile loop for a pass after a cancel."""
    app = FastAPI(title="mlrt ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ui = UiContext(store, login_required, wake)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(LoginNeeded)
    async def login_needed(request: Request, _exc: LoginNeeded) -> Response:
        if request.method != "GET" or request.headers.get(FRAGMENT_HEADER):
            return PlainTextResponse("sign in first: no session, or its token was revoked", status_code=401)
        here = PREFIX + request.url.path.removeprefix(request.scope.get("root_path", ""))
        if request.url.query:
            here += "?" + request.url.query
        return RedirectResponse(f"{PREFIX}/login?next={quote(here, safe='')}", status_code=303)

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> Response:
        if request.headers.get(FRAGMENT_HEADER):
            return PlainTextResponse(str(exc.detail), status_code=exc.status_code)
        return render(request, "error.html", {"status": exc.status_code, "detail": exc.detail}, exc.status_code)

    for name in ui.PAGES:
        app.include_router(importlib.import_module(name).router)
    return app


def standalone_app(store: Store, host: str) -> FastAPI:
    """What ``mlrt ui`` serves: the UI at ``/ui`` for the local user, ``/`` leading there.
    Bound to a loopback address, it answers only requests naming a loopback host (so a page
    of another site cannot reach it through DNS rebinding)."""
    root = FastAPI(title="mlrt ui", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    if host in LOOPBACK:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        root.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK))

    @root.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=307)

    root.mount(PREFIX, create_ui(store, login_required=False))
    return root
