"""API tokens of the controller service: issued once, stored hashed, checked per request.

A token reads ``mlrt_<id>_<secret>``. Only ``sha256(secret)`` is stored
(with the token's kind, user and project), so a copy of the database gives
no one a usable token; the plain token is shown once, when it is created.

Kinds:

- ``user``: submits, reads and cancels the jobs of its ``project``;
- ``admin``: the same for every project (platform operators);
- ``worker``: issued by the controller for one attempt of one run and handed
  to that run's workers as ``MLRT_TRACKING_TOKEN``; it can only write that
  run's metrics and params, and is revoked when the attempt ends.

Create user and admin tokens on the controller's database with
``mlrt tokens create --user NAME --project NAME [--admin]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets

from sqlalchemy import bindparam, update
from sqlmodel import select

from mlrt.store import Store
from mlrt.store.models import ProjectLimit, Token, utcnow

KINDS = ("user", "admin", "worker")
_PREFIX = "mlrt_"


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    token_id: str
    kind: str
    user: str
    project: str | None
    run_id: str | None = None
    max_priority: int | None = None
    """The ``max_priority`` limit of the token's project when the token was looked up (None: no
    cap), read in the same query as the token: every submission checks its priority against it."""

    def can_see(self, project: str | None) -> bool:
        """Whether this principal may read and act on a job of ``project``."""
        return self.kind == "admin" or (self.kind == "user" and project is not None and project == self.project)

    def can_track(self, run_id: str) -> bool:
        """Whether this principal may write metrics and params of ``run_id``."""
        return self.kind == "worker" and self.run_id == run_id


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(store: Store, kind: str, user: str, project: str | None = None, run_id: str | None = None) -> str:
    """Create a token and return it in plain text (the only time it exists unhashed)."""
    row, token = new_token(kind, user, project, run_id)
    with store.session() as s:
        s.add(row)
    return token


def new_token(kind: str, user: str, project: str | None = None, run_id: str | None = None) -> tuple[Token, str]:
    """A token's row, not yet stored, and the token in plain text (see :func:`issue`)."""
    if kind not in KINDS:
        raise ValueError(f"token kind must be one of {', '.join(KINDS)}, got {kind!r}")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = Token(id=token_id, secret_hash=_hash(secret), kind=kind, user=user, project=project, run_id=run_id)
    return row, f"{_PREFIX}{token_id}_{secret}"


def authenticate(store: Store, presented: str) -> Principal | None:
    """The principal of a presented token, or None when it is malformed, unknown or revoked."""
    if not presented.startswith(_PREFIX):
        return None
    token_id, _, secret = presented[len(_PREFIX) :].partition("_")
    if not token_id or not secret:
        return None
    with store.read_connection() as conn:  # no transaction around it: every API request asks this
        row = conn.execute(_LOOKUP, {"token_id": token_id}).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        return None
    return Principal(row.id, row.kind, row.user, row.project, row.run_id, row.max_priority)


_LOOKUP = (
    select(Token.__table__, ProjectLimit.__table__.c.max_priority)
    .outerjoin(ProjectLimit.__table__, ProjectLimit.__table__.c.project == Token.__table__.c.project)
    .where(Token.__table__.c.id == bindparam("token_id"))
)
"""A token by id, with its project's priority cap: one Core statement, built once."""


def revoke_run_tokens(store: Store, run_id: str) -> None:
    """Revoke every worker token of ``run_id`` (its attempt ended)."""
    with store.session() as s:
        s.exec(
            update(Token).where(Token.run_id == run_id, Token.revoked_at.is_(None)).values(revoked_at=utcnow())  # type: ignore[union-attr]
        )


def revoke(store: Store, token_id: str) -> bool:
    """Revoke one token by id; False when there is no such active token."""
    with store.session() as s:
        result = s.exec(
            update(Token).where(Token.id == token_id, Token.revoked_at.is_(None)).values(revoked_at=utcnow())  # type: ignore[union-attr]
        )
        return result.rowcount == 1


def list_tokens(store: Store) -> list[Token]:
    """User and admin tokens (worker tokens are short-lived and many), newest first."""
    with store.session() as s:
        query = select(Token).where(Token.kind != "worker").order_by(Token.created_at.desc())  # type: ignore[attr-defined]
        return list(s.exec(query))
