"""Who looks at the UI, and the checks on what changes something.

Under ``mlrt controller`` a viewer signs in once with an API token
(:mod:`mlrt.service.auth`): the login page puts the token in the cookie
``mlrt_session`` (HttpOnly, SameSite=Strict, Secure over HTTPS, path
``/ui``), and every request reads the principal from it, so revoking the
token ends the session. A user token sees its project's runs, an admin
token every run; a worker token cannot sign in. Under ``mlrt ui`` the one
local user sees everything and signs in to nothing.

A form that changes something (cancel, sign out) carries a ``csrf`` field:
an HMAC of the session's token (of a per-process secret under ``mlrt ui``),
so a page of another site can neither read nor forge it; a request whose
``Origin`` is another site's is refused as well.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, HTTPException, Request

from mlrt.service import auth
from mlrt.service.auth import Principal
from mlrt.store import NotFound, Store
from mlrt.store.models import Run

COOKIE = "mlrt_session"
PREFIX = "/ui"
FRAGMENT_HEADER = "X-Mlrt-Fragment"
"""Sent by ``static/ui.js`` with its fetches: such a request is answered 401, not sent to the login page."""
MAX_FORM_BYTES = 64 << 10
SESSION_SCOPE_KEY = "mlrt.principal"
"""Where the service's middleware leaves a session's principal (:data:`mlrt.service.guard.PRINCIPAL`)."""


@dataclasses.dataclass(frozen=True)
class UiContext:
    """What every page shares: the store, whether viewers sign in (the controller service)
    or are the one local user (``mlrt ui``), and ``wake`` (asks the service's reconcile loop
    for a pass now; None under ``mlrt ui``)."""

    store: Store
    login_required: bool
    wake: Callable[[], None] | None = None
    local_secret: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(32))


class LoginNeeded(Exception):
    """The request has no valid session: a page goes to the login page, a fragment gets 401."""


def ui_context(request: Request) -> UiContext:
    return request.app.state.ui


Context = Annotated[UiContext, Depends(ui_context)]


def local_user() -> Principal:
    """The viewer under ``mlrt ui``: the user running it, allowed every run."""
    return Principal(token_id="local", kind="admin", user=getpass.getuser(), project=None)


def session_principal(store: Store, token: str) -> Principal | None:
    """The principal of a session's token: None when it is unknown, revoked or a worker's."""
    found = auth.authenticate(store, token)
    return found if found is not None and found.kind != "worker" else None


def viewer(request: Request, ctx: Context) -> Principal:
    """Who the request acts as (a sync dependency: the token lookup runs in a worker thread).
    Under the service, the session was looked up already by its middleware
    (:class:`mlrt.service.guard.Guard`, which counts the viewer's requests), under the scope key
    ``mlrt.principal``."""
    if not ctx.login_required:
        return local_user()
    if SESSION_SCOPE_KEY in request.scope:
        found = request.scope[SESSION_SCOPE_KEY]
    else:
        token = request.cookies.get(COOKIE, "")
        found = session_principal(ctx.store, token) if token else None
    if found is None:
        raise LoginNeeded()
    return found


Viewer = Annotated[Principal, Depends(viewer)]


def visible_run(ctx: UiContext, who: Principal, run_id: str) -> Run:
    """The run ``run_id`` when ``who`` may see it; 404 for an unknown run and for another
    project's (a viewer learns nothing of runs outside their project)."""
    try:
        run = ctx.store.get_run(run_id)
    except NotFound:
        raise HTTPException(404, f"no run {run_id!r}") from None
    if not who.can_see(ctx.store.projects_of([run_id]).get(run_id)):
        raise HTTPException(404, f"no run {run_id!r}")
    return run


def project_filter(who: Principal) -> str | None:
    """The project a run query keeps (None: every project, for admins and the local user)."""
    return None if who.kind == "admin" else who.project or ""


def csrf_token(ctx: UiContext, request: Request) -> str:
    """The ``csrf`` form value of this session."""
    secret = request.cookies.get(COOKIE, "") if ctx.login_required else ctx.local_secret
    return hmac.new(secret.encode(), b"mlrt-ui-csrf", hashlib.sha256).hexdigest()


def same_origin(request: Request) -> bool:
    """Whether the request comes from a page of this site (``Origin``, else ``Sec-Fetch-Site``)."""
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (the first value of each)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form: too large")
    return {key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace")).items()}


async def check_form(request: Request, ctx: UiContext) -> dict[str, str]:
    """The form's fields, once its origin and ``csrf`` value are checked (403 otherwise)."""
    if not same_origin(request):
        raise HTTPException(403, "form posted from another site")
    fields = await form_fields(request)
    if not hmac.compare_digest(fields.get("csrf", ""), csrf_token(ctx, request)):
        raise HTTPException(403, "form: missing or stale csrf value; reload the page and try again")
    return fields


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of the UI, never another site."""
    if not target or not target.startswith(PREFIX + "/") or target.startswith("//") or "\\" in target:
        return PREFIX + "/"
    return target
