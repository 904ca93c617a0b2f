"""The model registry: named models, their numbered versions, aliases, and what happened to them.

A version is made from a SUCCEEDED run that wrote model files (``mlrt models
register RUN --name churn``): versions of a model are numbered 1, 2, ... in
the order they are registered, and each keeps the run it came from and its
model files as the run's artifact rows had them (path, size, sha256), so a
download can be checked byte for byte. The run's other files, those mlrt
writes for its reports (``predictions.parquet``, ``reports/``), are not model
files. Through the run a version leads to its data digests, code and parents
(the run's lineage, :mod:`mlrt.lineage`).

An alias (``champion``) names one version of a model; moving it to another
version is allowed, and every registration, alias change and deletion is kept
in the model's history. A model belongs to the project of the run its first
version came from (None for local runs): versions from another project's runs
are refused, and the service shows a model to its project's tokens only.

A reference names one version: ``churn`` (the latest), ``churn/3`` or
``churn@champion``. Every read returns plain data (timestamps as ISO 8601
text), the same locally and through the service's API.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Column, ForeignKeyConstraint, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from mlrt.store.models import utcnow

if TYPE_CHECKING:  # pragma: no cover
    from mlrt.store import Store
    from mlrt.store.models import Artifact

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A model name: letters, digits, ``.``, ``_``, ``-`` (no ``/`` or ``@``, which references use)."""
ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
"""An alias: starts with a letter, so that it never reads as a version number."""
REPORT_FILES = ("predictions.parquet", "reports/")
"""Files a run writes for its reports (:mod:`mlrt.report_runner`), not part of its model."""
KEY_METRICS = 3
"""How many of a run's metrics the versions table shows (validation ones first)."""


class RegisteredModel(SQLModel, table=True):
    """A named model; its versions are :class:`ModelVersion` rows."""

    __tablename__ = "registered_models"

    name: str = Field(primary_key=True)
    project: str | None = Field(default=None, index=True)
    """The project of the run its first version came from (None: local runs)."""
    description: str = ""
    created_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ModelVersion(SQLModel, table=True):
    """Version ``version`` of ``model``: the model files of run ``run_id`` as registered."""

    __tablename__ = "model_versions"

    model: str = Field(foreign_key="registered_models.name", primary_key=True)
    version: int = Field(primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    description: str = ""
    files: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """``{path, size, sha256}`` of each model file, from the run's artifact rows."""
    created_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ModelAlias(SQLModel, table=True):
    """``alias`` of ``model`` names ``version``."""

    __tablename__ = "model_aliases"
    __table_args__ = (ForeignKeyConstraint(["model", "version"], ["model_versions.model", "model_versions.version"]),)

    model: str = Field(primary_key=True)
    alias: str = Field(primary_key=True)
    version: int
    updated_by: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class ModelEvent(SQLModel, table=True):
    """One line of a model's history: a version registered, an alias set, moved or deleted."""

    __tablename__ = "model_events"

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(foreign_key="registered_models.name", index=True)
    at: datetime = Field(default_factory=utcnow)
    user: str | None = None
    what: str


class RegistryError(ValueError):
    """A registry request that cannot be done as asked (the message says why and what to do)."""


def model_files(artifacts: list[Artifact]) -> list[dict[str, Any]]:
    """The model files among a run's artifacts: all but the files written for its reports."""
    return [
        {"path": a.path, "size": a.size, "sha256": a.sha256}
        for a in artifacts
        if not any(a.path == f or (f.endswith("/") and a.path.startswith(f)) for f in REPORT_FILES)
    ]


def key_metrics(metrics: dict[str, float], count: int = KEY_METRICS) -> dict[str, float]:
    """The first ``count`` of a run's metrics by name, validation ones (``validation_``,
    ``val_``) when it has any."""
    shown = {k: v for k, v in metrics.items() if k.startswith(("validation_", "val_"))} or metrics
    return dict(sorted(shown.items())[:count])


def parse_reference(reference: str) -> tuple[str, int | str | None]:
    """``churn`` -> (churn, None: the latest), ``churn/3`` -> (churn, 3), ``churn@champion`` ->
    (churn, "champion"); RegistryError for anything else."""
    name, alias, version = reference, None, None
    if "@" in reference:
        name, alias = reference.split("@", 1)
    elif "/" in reference:
        name, number = reference.split("/", 1)
        if not number.isdigit() or int(number) < 1:
            raise RegistryError(f"model reference {reference!r}: the version after '/' must be a number from 1")
        version = int(number)
    if not NAME.fullmatch(name) or (alias is not None and not ALIAS.fullmatch(alias)):
        raise RegistryError(f"model reference {reference!r}: write NAME, NAME/VERSION or NAME@ALIAS")
    return name, version if alias is None else alias


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


class Registry:
    """The model registry kept in a metadata :class:`~mlrt.store.Store`.

    ``visible`` (a project -> bool test, such as a service token's ``can_see``)
    limits what :meth:`list_models` lists; reads of one model are checked by
    the caller (:meth:`model_project`)."""

    def __init__(self, store: Store):
        self.store = store

    def _model(self, s: Session, name: str) -> RegisteredModel:
        from mlrt.store import NotFound

        model = s.get(RegisteredModel, name)
        if model is None:
            raise NotFound(f"no model {name!r} (mlrt models list shows the registered ones)")
        return model

    def model_project(self, name: str) -> str | None:
        """The project model ``name`` belongs to (NotFound when there is no such model)."""
        with self.store.session() as s:
            return self._model(s, name).project

    # -- writes ------------------------------------------------------------------

    def register(self, run_id: str, name: str, *, description: str = "", user: str | None = None) -> dict[str, Any]:
        """Make the next version of model ``name`` (created with this first version) from the
        SUCCEEDED run ``run_id``; returns the version (:meth:`version`). RegistryError when the
        run cannot give one (not succeeded, no model files) or belongs to another project."""
        if not NAME.fullmatch(name):
            raise RegistryError(
                f"--name {name!r}: a model name is letters, digits, '.', '_' and '-' (at most 100), "
                "starting with a letter or digit"
            )
        run = self.store.get_run(run_id)
        if run.state != "SUCCEEDED":
            raise RegistryError(
                f"run {run_id} is {run.state}: only a SUCCEEDED run's model can be registered ({run.reason})"
            )
        files = model_files(self.store.artifacts(run_id))
        if not files:
            raise RegistryError(
                f"run {run_id} has no model files (artifacts other than predictions.parquet and reports/): "
                "an algorithm job saves its model; a command job writes it to $MLRT_OUTPUT_DIR"
            )
        project = self.store.projects_of([run_id]).get(run_id)
        for _ in range(5):  # another registration may take the same number: take the next one
            try:
                with self.store.session() as s:
                    model = s.get(RegisteredModel, name)
                    if model is None:
                        model = RegisteredModel(name=name, project=project, description=description, created_by=user)
                        s.add(model)
                        s.flush()
                    elif model.project != project:
                        raise RegistryError(
                            f"model {name!r} belongs to project {model.project or '(local)'}, run {run_id} to "
                            f"{project or '(local)'}: register it under another --name"
                        )
                    latest = s.exec(select(func.max(ModelVersion.version)).where(ModelVersion.model == name)).one()
                    number = (latest or 0) + 1
                    s.add(
                        ModelVersion(
                            model=name,
                            version=number,
                            run_id=run_id,
                            description=description,
                            files=files,
                            created_by=user,
                        )
                    )
                    s.add(ModelEvent(model=name, user=user, what=f"version {number} registered from run {run_id}"))
                break
            except IntegrityError:
                continue
        else:
            raise RegistryError(f"model {name!r}: too many registrations at once; try again")
        return self.version(f"{name}/{number}")

    def set_alias(self, name: str, alias: str, version: int, *, user: str | None = None) -> dict[str, Any]:
        """Point ``alias`` of model ``name`` at ``version`` (moving it if it named another);
        returns the model (:meth:`model`)."""
        if not ALIAS.fullmatch(alias):
            raise RegistryError(
                f"alias {alias!r}: an alias starts with a letter, then letters, digits, '_' or '-' (at most 63)"
            )
        with self.store.session() as s:
            self._model(s, name)
            if s.get(ModelVersion, (name, version)) is None:
                raise RegistryError(f"model {name!r} has no version {version} (mlrt models show {name})")
            row = s.get(ModelAlias, (name, alias))
            if row is None:
                s.add(ModelAlias(model=name, alias=alias, version=version, updated_by=user))
                what = f"alias {alias} set to version {version}"
            elif row.version != version:
                what = f"alias {alias} moved from version {row.version} to version {version}"
                row.version, row.updated_by, row.updated_at = version, user, utcnow()
                s.add(row)
            else:
                what = ""
            if what:
                s.add(ModelEvent(model=name, user=user, what=what))
        return self.model(name)

    def delete_alias(self, name: str, alias: str, *, user: str | None = None) -> dict[str, Any]:
        """Remove ``alias`` from model ``name``; returns the model (:meth:`model`)."""
        with self.store.session() as s:
            self._model(s, name)
            row = s.get(ModelAlias, (name, alias))
            if row is None:
                raise RegistryError(f"model {name!r} has no alias {alias!r}")
            s.delete(row)
            s.add(ModelEvent(model=name, user=user, what=f"alias {alias} deleted (it named version {row.version})"))
        return self.model(name)

    # -- reads -------------------------------------------------------------------

    def list_models(self, visible: Callable[[str | None], bool] | None = None) -> list[dict[str, Any]]:
        """Every model (those ``visible`` allows): name, description, latest version, how many
        versions, aliases (alias -> version)."""
        with self.store.session() as s:
            models = [
                m
                for m in s.exec(select(RegisteredModel).order_by(RegisteredModel.name))
                if visible is None or visible(m.project)
            ]
            names = [m.name for m in models]
            counts = dict(
                s.exec(
                    select(ModelVersion.model, func.max(ModelVersion.version))
                    .where(col(ModelVersion.model).in_(names))
                    .group_by(ModelVersion.model)
                ).all()
            )
            totals = dict(
                s.exec(
                    select(ModelVersion.model, func.count())
                    .where(col(ModelVersion.model).in_(names))
                    .group_by(ModelVersion.model)
                ).all()
            )
            aliases = self._aliases(s, names)
        return [
            {
                "name": m.name,
                "project": m.project,
                "description": m.description,
                "latest_version": counts.get(m.name),
                "versions": totals.get(m.name, 0),
                "aliases": aliases.get(m.name, {}),
                "created_at": _stamp(m.created_at),
            }
            for m in models
        ]

    @staticmethod
    def _aliases(s: Session, names: list[str]) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        rows = s.exec(select(ModelAlias).where(col(ModelAlias.model).in_(names)).order_by(ModelAlias.alias))
        for row in rows:
            found.setdefault(row.model, {})[row.alias] = row.version
        return found

    def model(self, name: str) -> dict[str, Any]:
        """Model ``name`` with every version (newest first: run, created, aliases, the run's
        state and latest metrics, files) and its history (oldest first)."""
        with self.store.session() as s:
            model = self._model(s, name)
            versions = list(
                s.exec(
                    select(ModelVersion).where(ModelVersion.model == name).order_by(col(ModelVersion.version).desc())
                )
            )
            aliases = self._aliases(s, [name]).get(name, {})
            history = list(s.exec(select(ModelEvent).where(ModelEvent.model == name).order_by(col(ModelEvent.id))))
        metrics = self.store.latest_metrics_of([v.run_id for v in versions])
        return {
            "name": model.name,
            "project": model.project,
            "description": model.description,
            "created_by": model.created_by,
            "created_at": _stamp(model.created_at),
            "aliases": aliases,
            "versions": [self._version_view(v, aliases, metrics.get(v.run_id, {})) for v in versions],
            "history": [{"at": _stamp(e.at), "user": e.user, "what": e.what} for e in history],
        }

    @staticmethod
    def _version_view(version: ModelVersion, aliases: dict[str, int], metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "model": version.model,
            "version": version.version,
            "run_id": version.run_id,
            "description": version.description,
            "created_by": version.created_by,
            "created_at": _stamp(version.created_at),
            "aliases": sorted(a for a, v in aliases.items() if v == version.version),
            "metrics": metrics,
            "key_metrics": key_metrics(metrics),
            "files": version.files,
        }

    def resolve(self, reference: str) -> ModelVersion:
        """The version a reference names (see :func:`parse_reference`); NotFound when it names none."""
        from mlrt.store import NotFound

        name, which = parse_reference(reference)
        with self.store.session() as s:
            self._model(s, name)
            if isinstance(which, str):
                alias = s.get(ModelAlias, (name, which))
                if alias is None:
                    raise NotFound(f"model {name!r} has no alias {which!r}")
                which = alias.version
            if which is None:
                which = s.exec(select(func.max(ModelVersion.version)).where(ModelVersion.model == name)).one()
            version = s.get(ModelVersion, (name, which)) if which is not None else None
            if version is None:
                raise NotFound(f"model {name!r} has no version {which}")
            return version

    def version(self, reference: str) -> dict[str, Any]:
        """One version (:meth:`resolve`) with its run (state, job, params, latest metrics, data
        channels) and the run's lineage (:func:`mlrt.lineage.entry`: source digest, git commit,
        environment, data digests, parent runs)."""
        from mlrt.lineage import entry

        version = self.resolve(reference)
        with self.store.session() as s:
            aliases = self._aliases(s, [version.model]).get(version.model, {})
        run = self.store.get_run(version.run_id)
        job = self.store.get_job(run.job_id)
        metrics = self.store.latest_metrics(run.id)
        return {
            **self._version_view(version, aliases, metrics),
            "run": {
                "id": run.id,
                "job": job.name,
                "state": run.state,
                "created_at": _stamp(run.created_at),
                "output_uri": run.output_uri,
                "params": self.store.params(run.id),
                "seed": run.record.get("seed"),
                "data": {name: channel.get("uri") for name, channel in (run.record.get("data") or {}).items()},
            },
            "lineage": entry(run, job),
        }
