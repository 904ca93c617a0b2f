"""The service's outermost layer: request ids, a token before the body, a bounded body, no silent 500.

A pure ASGI middleware (it wraps ``receive`` and ``send``; nothing is buffered):

- every response carries ``X-Request-Id``;
- on ``/api/`` routes the token is checked from the headers alone, before a
  byte of the body is read: a missing, malformed or unknown token is 401,
  and a request that announced a body gets ``Connection: close``, so an
  anonymous upload costs the service neither memory nor reading time. The
  principal goes on to the route in the ASGI scope (looked up once);
- a body larger than :func:`max_request_bytes` (for a source bundle's upload, what
  the source limits allow, :mod:`mlrt.bundles`) is 413: at once when
  ``Content-Length`` says so, else as soon as the bytes read pass the limit
  (a chunked body is counted while it streams);
- a refusal that closes the connection before the body was read whole (401, 413)
  is a lingering close (RFC 9112 section 9.6, nginx's ``lingering_close``): the
  answer is sent, then what the client still sends is read and dropped for up to
  :data:`LINGER_SECONDS` and :data:`LINGER_BYTES` before the connection closes, by
  at most :data:`LINGER_CONNECTIONS` connections at once (beyond them it closes at once).
  Closing with unread bytes makes the kernel reset the connection, and a client
  still writing its body (most send it whole before they read) would get that
  reset instead of the answer;
- one caller (a user's tokens and signed-in web UI pages, or the workers of one
  run) has at most :func:`max_requests_per_caller` requests in flight in a service
  process, from its token's check until its answer's last byte; one more is 429 with
  ``Retry-After``, before its body is read. The routes run in a pool of 40
  threads per process: a caller who sends a flood (a script polling in a
  loop, a run with a hundred workers) waits on its own requests, and leaves
  the others' threads to everyone else;
- a handler that raises what it did not expect gets a 500 ``{"detail":
  "internal error", "request_id": ...}``, with the traceback logged under that
  request id, and the process goes on serving; a database that cannot be
  used is 503 instead (the operator's matter, not a bug).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlrt.service import auth
from mlrt.service.auth import Principal
from mlrt.settings import SettingError
from mlrt.store import Store
from mlrt.store.engine import is_database_fault
from mlrt.ui import auth as ui_auth

LIMIT_VARIABLE = "MLRT_MAX_REQUEST_BYTES"
DEFAULT_MAX_REQUEST_BYTES = 8 << 20
"""8 MiB: a 1 MiB spec even when every character is JSON-escaped, and 50,000 metric points."""
PRINCIPAL = ui_auth.SESSION_SCOPE_KEY
"""The ASGI scope key where the authenticated :class:`Principal` of an ``/api/`` request waits for
its route; for a ``/ui`` request with a session cookie, its viewer (None when the session is not valid)."""
REQUEST_ID_HEADER = "X-Request-Id"
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 << 20
"""How long, and how much of a refused body, a lingering close reads before it closes anyway."""
LINGER_CONNECTIONS = 64
"""At most this many connections of one service process linger at once: a refusal beyond them
closes as soon as its answer is sent, so clients refused in a flood (anonymous ones too) hold
at most this many readers, not one each."""
CALLER_LIMIT_VARIABLE = "MLRT_MAX_REQUESTS_PER_CALLER"
DEFAULT_MAX_REQUESTS_PER_CALLER = 16
"""Of the 40 threads that run a process's routes, one caller takes at most 16."""
RETRY_AFTER_SECONDS = 1
SOURCES_PATH = "/api/v1/sources"
"""Source bundle uploads, whose body limit follows the source limits (see :meth:`Guard.limit_of`)."""

_log = logging.getLogger("mlrt.service")


def max_request_bytes() -> int:
    """The largest request body accepted, from ``MLRT_MAX_REQUEST_BYTES`` (default 8 MiB)."""
    raw = os.environ.get(LIMIT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_REQUEST_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise SettingError(f"{LIMIT_VARIABLE}: {raw!r} is not a positive number of bytes, e.g. {8 << 20}")
    return int(raw)


def max_requests_per_caller() -> int:
    """How many requests one caller may have in flight at once in a service process, from
    ``MLRT_MAX_REQUESTS_PER_CALLER`` (default 16)."""
    raw = os.environ.get(CALLER_LIMIT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_REQUESTS_PER_CALLER
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise SettingError(f"{CALLER_LIMIT_VARIABLE}: {raw!r} is not a whole number of requests from 1, e.g. 16")
    return int(raw)


def caller_of(principal: Principal) -> tuple[str, str]:
    """Whose share a request counts against: a run's workers share one, a user's tokens share one."""
    if principal.kind == "worker":
        return "run", principal.run_id or principal.token_id
    return principal.kind, principal.user


def _ui_page(path: str) -> bool:
    """Whether ``path`` is a page or fragment of the web UI (its static files need no viewer)."""
    return (path == ui_auth.PREFIX or path.startswith(ui_auth.PREFIX + "/")) and not path.startswith(
        ui_auth.PREFIX + "/static/"
    )


class BodyTooLarge(HTTPException):
    """The request body passed the limit while it was read (answered 413)."""

    def __init__(self, limit: int):
        super().__init__(
            413,
            f"request body: larger than {limit} bytes, this service's {LIMIT_VARIABLE}; send less per request",
            headers={"Connection": "close"},
        )


class Guard:
    """The middleware described in the module docstring; ``counted(method, status)`` is
    called once per answered request (the service's request counter)."""

    def __init__(self, app: ASGIApp, *, store: Store, limit: int, counted: Callable[[str, int], None]):
        self.app = app
        self.store = store
        self.limit = limit
        self.counted = counted
        self.lingering = 0
        """Connections lingering now (see :data:`LINGER_CONNECTIONS`)."""
        self.per_caller = max_requests_per_caller()
        self.in_flight: dict[tuple[str, str], int] = {}
        """Requests in flight by :func:`caller_of`; changed on the event loop only."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        answered: dict[str, int] = {}
        headers = Headers(scope=scope)
        # A client that waits for "100 Continue" sends no body after a refusal: nothing to read.
        waits = "100-continue" in headers.get("expect", "").lower()
        body = {"read": waits or not _announces_body(headers), "closes": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
                headers = [*message.get("headers", []), (REQUEST_ID_HEADER.lower().encode(), request_id.encode())]
                message = {**message, "headers": headers}
                body["closes"] = (b"connection", b"close") in ((k.lower(), v.lower()) for k, v in headers)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                if body["closes"] and not body["read"]:
                    await send({**message, "more_body": True})  # the whole answer: the client can read it
                    if self.lingering < LINGER_CONNECTIONS:
                        self.lingering += 1  # on the event loop: no other coroutine runs in between
                        try:
                            await _linger(receive)
                        finally:
                            self.lingering -= 1
                    message = {"type": "http.response.body", "body": b""}
            await send(message)

        try:
            refusal = await self._refusal(scope, headers)
            if refusal is not None:
                status, detail, headers = refusal
                await _answer(send_with_id, status, {"detail": detail}, headers)
                return
            # No await between the count's check in _refusal and here: no other request counts in between.
            principal = scope.get(PRINCIPAL)
            caller = caller_of(principal) if principal is not None else None
            if caller is not None:
                self.in_flight[caller] = self.in_flight.get(caller, 0) + 1
            try:
                await self.app(scope, self._limited(receive, self.limit_of(scope), body), send_with_id)
            finally:
                if caller is not None:
                    left = self.in_flight.pop(caller) - 1
                    if left:
                        self.in_flight[caller] = left
        except BodyTooLarge as exc:  # read outside a route (a route's own read is answered by FastAPI)
            if "status" not in answered:
                await _answer(send_with_id, 413, {"detail": exc.detail}, exc.headers or {})
        except Exception as exc:
            await self._unexpected(scope, exc, request_id, "status" in answered, send_with_id)
        finally:
            self.counted(scope["method"], answered.get("status", 500))

    async def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str, dict[str, str]] | None:
        """Why the request is answered before its body is read, or None."""
        close = {"Connection": "close"} if _announces_body(headers) else {}
        if scope["path"].startswith("/api/"):
            challenge = {"WWW-Authenticate": "Bearer", **close}
            authorization = headers.get("authorization", "")
            if not authorization.startswith("Bearer "):
                return 401, "missing token: send Authorization: Bearer <token> (see mlrt login)", challenge
            # A database round trip: in a worker thread, never on the event loop.
            found = await run_in_threadpool(
                auth.authenticate, self.store, authorization.removeprefix("Bearer ").strip()
            )
            if found is None:
                return 401, "invalid or revoked token", challenge
            if self._at_share(found):
                return 429, self._busy_detail(), {"Retry-After": str(RETRY_AFTER_SECONDS), **close}
            scope[PRINCIPAL] = found
        elif _ui_page(scope["path"]) and (session := cookie_parser(headers.get("cookie", "")).get(ui_auth.COOKIE)):
            # A signed-in page counts against its viewer's share too; its route takes the principal
            # from here (None: no valid session, the route sends the viewer to the login page).
            found = await run_in_threadpool(ui_auth.session_principal, self.store, session)
            if found is not None and self._at_share(found):
                return 429, self._busy_detail(), {"Retry-After": str(RETRY_AFTER_SECONDS), **close}
            scope[PRINCIPAL] = found
        length = _content_length(headers)
        limit = self.limit_of(scope)
        if length is not None and length > limit:
            return 413, BodyTooLarge(limit).detail, close
        return None

    def _at_share(self, principal: Principal) -> bool:
        """Whether the principal's caller has its :func:`max_requests_per_caller` in flight."""
        return self.in_flight.get(caller_of(principal), 0) >= self.per_caller

    def _busy_detail(self) -> str:
        return (
            f"too many requests at once: {self.per_caller} of yours are in flight in this process"
            f" ({CALLER_LIMIT_VARIABLE}); retry after {RETRY_AFTER_SECONDS} s"
        )

    def limit_of(self, scope: Scope) -> int:
        """The body limit of a request: :func:`max_request_bytes`, or for a source bundle's upload
        (``POST /api/v1/sources``) at least what a bundle within the source limits can take."""
        if scope["path"] != SOURCES_PATH:
            return self.limit
        from mlrt import limits

        try:
            source = limits.max_source_bytes()
        except ValueError:
            source = limits.MAX_SOURCE_BYTES
        return max(self.limit, source + limits.MAX_SOURCE_FILES * 3 * 512)  # each file's tar header blocks

    def _limited(self, receive: Receive, limit: int, body: dict[str, bool]) -> Receive:
        """``receive`` that raises :class:`BodyTooLarge` once the body read passes ``limit``, and
        sets ``body["read"]`` once the body was read whole (or the client left)."""
        read = 0

        async def limited() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                body["read"] = True
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise BodyTooLarge(limit)
            return message

        return limited

    async def _unexpected(self, scope: Scope, exc: Exception, request_id: str, started: bool, send: Send) -> None:
        """Log what a handler raised under ``request_id`` and answer 503 or 500 (unless the answer began)."""
        where = f"{scope['method']} {scope['path']}"
        if is_database_fault(exc):
            line = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
            _log.error("request %s: %s: database unavailable: %s", request_id, where, line)
            status, detail = 503, "database unavailable; try again shortly"
        else:
            _log.error("request %s: %s raised", request_id, where, exc_info=exc)
            status, detail = 500, "internal error"
        if not started:
            await _answer(send, status, {"detail": detail, "request_id": request_id}, {})


def principal_of(scope: Scope) -> Principal | None:
    """The principal :class:`Guard` authenticated for this request (``/api/`` routes)."""
    return scope.get(PRINCIPAL)


def _content_length(headers: Headers) -> int | None:
    """The announced body size; a number of more than 18 digits counts as too large to parse."""
    text = headers.get("content-length", "").strip()
    if not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= 18 else 10**18


def _announces_body(headers: Headers) -> bool:
    return bool(_content_length(headers)) or "chunked" in headers.get("transfer-encoding", "").lower()


async def _linger(receive: Receive) -> None:
    """Read and drop the rest of a refused request's body until it ends or the client leaves, for
    at most :data:`LINGER_SECONDS` and :data:`LINGER_BYTES` (see the module docstring)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_SECONDS
    dropped = 0
    while dropped < LINGER_BYTES:
        try:
            message = await asyncio.wait_for(receive(), deadline - loop.time())
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body"):
            return
        dropped += len(message.get("body", b""))


async def _answer(send: Send, status: int, content: dict[str, str], headers: dict[str, str]) -> None:
    body = json.dumps(content).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
