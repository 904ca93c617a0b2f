"""The model registry (:mod:`mlrt.store.registry`): list, register, show, alias.

A user token sees and changes its project's models and registers versions
from its project's runs; an admin token every model. Another project's model
is 403, an unknown one 404; a request the registry refuses (a run that did
not succeed, a bad name, an unknown version) is 422 with the reason. A
version's files are read through the run's artifact routes.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException

from mlrt.service.auth import Principal
from mlrt.service.routes.common import StoreDep, User, visible_run
from mlrt.store import NotFound
from mlrt.store.registry import Registry, RegistryError

router = APIRouter(prefix="/api/v1/models", tags=["models"])


async def registry(store: StoreDep) -> Registry:  # no I/O: on the event loop
    return Registry(store)


RegistryDep = Annotated[Registry, Depends(registry)]


def visible_model(registry: Registry, who: Principal, name: str) -> None:
    """404 when there is no model ``name``, 403 when it belongs to a project ``who`` cannot see."""
    if not who.can_see(registry.model_project(name)):
        raise HTTPException(403, f"model {name!r} belongs to another project")


def _refused(exc: RegistryError) -> HTTPException:
    return HTTPException(422, str(exc))


@router.get("")
def list_models(who: User, models: RegistryDep) -> list[dict[str, Any]]:
    """The models ``who`` may see: latest version, how many versions, aliases."""
    return models.list_models(who.can_see)


@router.post("", status_code=201)
def register(
    who: User,
    store: StoreDep,
    models: RegistryDep,
    run_id: Annotated[str, Body()],
    name: Annotated[str, Body()],
    description: Annotated[str, Body()] = "",
) -> dict[str, Any]:
    """Make the next version of model ``name`` from the SUCCEEDED run ``run_id``."""
    visible_run(store, who, run_id)
    try:
        visible_model(models, who, name)
    except NotFound:
        pass  # a new model: it belongs to the run's project
    try:
        return models.register(run_id, name, description=description, user=who.user)
    except RegistryError as exc:
        raise _refused(exc) from None


@router.get("/{name}")
def model(name: str, who: User, models: RegistryDep) -> dict[str, Any]:
    """The model with its versions (newest first) and history."""
    visible_model(models, who, name)
    return models.model(name)


@router.get("/{name}/versions/{which}")
def version(name: str, which: str, who: User, models: RegistryDep) -> dict[str, Any]:
    """One version (``which``: its number, or an alias) with its run and lineage."""
    visible_model(models, who, name)
    try:
        return models.version(f"{name}/{which}" if which.isdigit() else f"{name}@{which}")
    except RegistryError as exc:
        raise _refused(exc) from None


@router.put("/{name}/aliases/{alias}")
def set_alias(
    name: str, alias: str, who: User, models: RegistryDep, version: Annotated[int, Body(embed=True)]
) -> dict[str, Any]:
    """Point ``alias`` at ``version`` (moving it if it named another); the model back."""
    visible_model(models, who, name)
    try:
        return models.set_alias(name, alias, version, user=who.user)
    except RegistryError as exc:
        raise _refused(exc) from None


@router.delete("/{name}/aliases/{alias}")
def delete_alias(name: str, alias: str, who: User, models: RegistryDep) -> dict[str, Any]:
    """Remove ``alias``; the model back."""
    visible_model(models, who, name)
    try:
        return models.delete_alias(name, alias, user=who.user)
    except RegistryError as exc:
        raise _refused(exc) from None
