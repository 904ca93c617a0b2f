"""``/api/v1/plugins``: the plugins installed on the service (what ``mlrt plugins --json`` shows)."""

from typing import Any

from fastapi import APIRouter

from mlrt.service.routes.common import User

router = APIRouter(prefix="/api/v1", tags=["jobs"])


@router.get("/plugins")
def plugin_list(_who: User) -> list[dict[str, Any]]:
    from mlrt import plugins

    return plugins.describe()
