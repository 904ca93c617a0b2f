"""``/api/v1/whoami``: who a token acts as (any token, worker tokens included)."""

from typing import Any

from fastapi import APIRouter

from mlrt.service.routes.common import Anyone

router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.get("/whoami")
def whoami(who: Anyone) -> dict[str, Any]:
    return {"user": who.user, "project": who.project, "kind": who.kind}
