"""The metadata tables. The database is the source of truth for every job and run.

Schema changes go through an alembic migration in ``mlrt/store/migrations``;
``tests/test_store.py`` fails when these models and the migrations disagree.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any, NamedTuple

from pydantic_core import PydanticUndefined
from sqlalchemy import JSON, BigInteger, Column, Float, Index, Integer, Table
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

# 64-bit on PostgreSQL; INTEGER on SQLite, where only that type autoincrements.
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")

SQLITE_NAN = "NaN"
"""How SQLite keeps a NaN metric value: the text ``NaN`` in the REAL column.

SQLite turns a bound NaN into NULL (and the value columns are NOT NULL); a
text that is no number keeps its text in a REAL column, and SQLite orders
every text after every number, so ``MIN``, ``MAX``, ``ORDER BY`` and
comparisons treat it as PostgreSQL treats its NaN: above every number."""


def nan_as_sqlite_stores_it(value: float) -> float | str:
    """``value`` as SQLite is given it: NaN as :data:`SQLITE_NAN`, any other number as it is."""
    return SQLITE_NAN if value != value else value


class MetricValue(TypeDecorator):
    """A float column that keeps NaN on SQLite too (see :data:`SQLITE_NAN`); PostgreSQL stores
    NaN itself. Columns of this type read back as floats on both."""

    impl = Float
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return nan_as_sqlite_stores_it(value) if dialect.name == "sqlite" and isinstance(value, float) else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return float(value) if isinstance(value, str) else value


def utcnow() -> datetime:
    """The current time in UTC (timezone-aware; every timestamp column stores UTC)."""
    return datetime.now(timezone.utc)


class Job(SQLModel, table=True):
    """A submitted spec. A TrainingJob has exactly one run, whose id is the job's id."""

    __tablename__ = "jobs"

    id: str = Field(primary_key=True)
    name: str = Field(index=True)
    kind: str
    labels: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    spec_submitted: str
    spec_resolved: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    project: str | None = Field(default=None, index=True)
    """The project a job submitted through the controller's API belongs to (None: local)."""
    submitted_by: str | None = None


class Run(SQLModel, table=True):
    """One training run: its state, why it is in it, and who is driving it.

    A tuning job has a run of its own that drives the search; each trial is a
    run whose ``parent_id`` is that run and ``trial`` its number.

    ``owner`` identifies the controller process that drives the run
    (``host:pid:start-time``) and ``heartbeat_at`` when it took the run over
    (the owner's later heartbeats are one row per process, in
    :class:`ControllerHeartbeat`); a run whose owner is gone is failed by the next controller or
    ``mlrt status`` that looks. ``cancel_requested`` is how ``mlrt cancel``
    tells the owner to stop it. ``not_before`` delays a retry (backoff).
    """

    __tablename__ = "runs"
    # Newest first (``mlrt runs list``, ``status``, the UI) reads a page of this index, not every run.
    __table_args__ = (Index("ix_runs_created_at_id", "created_at", "id"),)

    id: str = Field(primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", index=True)
    parent_id: str | None = Field(default=None, foreign_key="runs.id", index=True)
    trial: int | None = None
    state: str = Field(index=True)
    reason: str = ""
    attempts: int = 0
    max_attempts: int = 1
    output_uri: str
    record: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    owner: str | None = Field(default=None, index=True)
    heartbeat_at: datetime | None = None
    cancel_requested: bool = False
    not_before: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    priority: int = 0
    backend: str | None = None
    cpus: float = 0.0
    memory: int = Field(default=0, sa_type=BigInteger)
    gpus: int = 0
    waiting: str = ""


class ControllerHeartbeat(SQLModel, table=True):
    """When a controller process (``owner``: ``host:pid:start-time``) last said it was alive:
    one row per process, written every few seconds however many runs it drives (a run of an
    owner on another host counts as orphaned once its owner's row is old, see
    :func:`mlrt.controller.owner_alive`). Rows of processes gone for an hour are removed."""

    __tablename__ = "controller_heartbeats"

    owner: str = Field(primary_key=True)
    heartbeat_at: datetime = Field(default_factory=utcnow)


class Attempt(SQLModel, table=True):
    """One try at a run: the launch request, the backend's handle, and how it ended."""

    __tablename__ = "attempts"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    number: int
    state: str
    reason: str = ""
    exit_code: int | None = None
    backend: str
    request: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    handle: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    log_dir: str
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    log_tail: str = ""
    """For an attempt a worker failed: the last lines of that worker's log (:mod:`mlrt.failures`)."""


class Param(SQLModel, table=True):
    """A run parameter (hyperparameters and anything logged with ``log_params``)."""

    __tablename__ = "params"

    run_id: str = Field(foreign_key="runs.id", primary_key=True)
    key: str = Field(primary_key=True)
    value: str


class Metric(SQLModel, table=True):
    """One metric point: ``key`` at ``step`` had ``value`` at ``timestamp``.

    ``run_id`` has no foreign key: checked for every row, it was about half of
    PostgreSQL's CPU in a metric ``COPY``. :meth:`mlrt.store.Store.insert_metrics`
    checks the run once per batch instead, and the batch's :class:`MetricSummary`
    rows keep a foreign key. Runs are never deleted; code that deletes one must
    delete its points and summaries in the same transaction."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_key_step_id", "run_id", "key", "step", "id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BIG_ID)
    run_id: str
    key: str
    step: int = 0
    value: float = Field(sa_type=MetricValue)
    timestamp: float


class MetricSummary(SQLModel, table=True):
    """What a run's points of one metric key add up to: how many, the lowest and
    highest value, the highest step and the value there (of equal steps, the one
    logged last).

    Kept by :meth:`mlrt.store.Store.insert_metrics` (one upsert per key per batch,
    in the batch's transaction) and :meth:`mlrt.store.Store.delete_metrics`
    (recomputed from the points left), so summaries and latest values read one
    row per key however many points a run logged."""

    __tablename__ = "metric_summaries"

    run_id: str = Field(foreign_key="runs.id", primary_key=True)
    key: str = Field(primary_key=True)
    points: int = Field(sa_type=BigInteger)
    low: float = Field(sa_type=MetricValue)
    high: float = Field(sa_type=MetricValue)
    last_step: int
    last_value: float = Field(sa_type=MetricValue)


class MetricBatch(SQLModel, table=True):
    """A batch of metric points a worker sent with an id (the SDK's uuid4 per batch).

    Stored in the transaction that stores the points, so a batch sent again
    (a retry after an ambiguous failure) is recognised and not stored twice."""

    __tablename__ = "metric_batches"

    run_id: str = Field(foreign_key="runs.id", primary_key=True)
    batch_id: str = Field(primary_key=True)
    points: int
    created_at: datetime = Field(default_factory=utcnow)


class Artifact(SQLModel, table=True):
    """A file a run produced, relative to its output prefix, with size and sha256."""

    __tablename__ = "artifacts"

    run_id: str = Field(foreign_key="runs.id", primary_key=True)
    path: str = Field(primary_key=True)
    uri: str
    size: int = Field(sa_type=BigInteger)
    sha256: str
    created_at: datetime = Field(default_factory=utcnow)


class Event(SQLModel, table=True):
    """A state transition (or other notable moment) of a run, with its reason."""

    __tablename__ = "events"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    at: datetime = Field(default_factory=utcnow)
    from_state: str | None = None
    to_state: str | None = None
    reason: str = ""


class Token(SQLModel, table=True):
    """An API token of the controller service, stored as a sha256 hash only.

    ``kind`` is ``user`` (acts on its project's jobs), ``admin`` (every
    project) or ``worker`` (writes metrics and params of ``run_id`` only,
    issued per attempt and revoked when the attempt ends)."""

    __tablename__ = "tokens"

    id: str = Field(primary_key=True)
    secret_hash: str
    kind: str
    user: str
    project: str | None = None
    run_id: str | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class ProjectLimit(SQLModel, table=True):
    """What one project may hold at once in the controller (None: no limit).

    ``max_running`` counts its active runs (starting, running or finalizing;
    a tuning run's trials count, the tuning run itself does not); the other
    limits sum those runs' requests: ``max_cpus`` cores, ``max_gpus`` and
    ``max_memory`` bytes. ``max_priority`` is the highest ``spec.priority`` the
    project's submissions may ask for (a higher one is refused at submit), so
    that one project cannot put its whole queue ahead of every other's. Set
    with ``mlrt projects limit``."""

    __tablename__ = "project_limits"

    project: str = Field(primary_key=True)
    max_running: int | None = None
    max_cpus: float | None = None
    max_gpus: int | None = None
    max_memory: int | None = Field(default=None, sa_type=BigInteger)
    max_priority: int | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class LogChunk(SQLModel, table=True):
    """A piece of one worker's log, kept in the database so that every controller replica
    can serve it: the bytes of attempt ``attempt``, worker ``worker`` from byte ``offset``."""

    __tablename__ = "log_chunks"
    __table_args__ = (Index("ix_log_chunks_position", "run_id", "attempt", "worker", "offset", unique=True),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BIG_ID)
    run_id: str = Field(foreign_key="runs.id")
    attempt: int
    worker: int
    offset: int = Field(sa_type=BigInteger)
    data: bytes
    created_at: datetime = Field(default_factory=utcnow)


class SourceBundle(SQLModel, table=True):
    """A source bundle (:mod:`mlrt.bundles`), kept once per digest: its bytes in ``data``, or,
    for a large one on a service with an S3 source store, ``uri`` where they are
    (see :mod:`mlrt.sources`). Runs name it by digest in their record (``source.digest``)."""

    __tablename__ = "source_bundles"

    digest: str = Field(primary_key=True)
    size: int = Field(sa_type=BigInteger)
    """Bytes of the tarball."""
    files: int
    data: bytes | None = None
    uri: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Row(NamedTuple):
    """A row to insert, built without a model instance (:func:`row_of`): its table and a value
    for each of its columns. :meth:`~mlrt.store.Store.create_job` takes these or instances."""

    table: Table
    values: dict[str, Any]


def row_of(model: type[SQLModel], **values: Any) -> Row:
    """``model(**values)`` as a :class:`Row`: each column as given, else its field's default
    (``default_factory`` called), as the constructor fills them. Without the instance and its
    attribute bookkeeping it costs a tenth as much, for rows written once and never read back,
    such as a submission's."""
    table, fields = _fields(model)
    unknown = values.keys() - fields.keys()
    if unknown:
        raise TypeError(f"{model.__name__} has no column {min(unknown)!r}")
    return Row(
        table,
        {
            name: values[name] if name in values else (factory() if factory is not None else default)
            for name, (default, factory) in fields.items()
        },
    )


def row_values(row: SQLModel | Row) -> tuple[Table, dict[str, Any]]:
    """The table of ``row`` (a model instance or a :class:`Row`) and a value for each of its
    columns, in a dict of its own."""
    if isinstance(row, Row):
        return row.table, dict(row.values)
    table = row.__table__
    return table, {column.key: getattr(row, column.key) for column in table.columns}


@functools.cache
def _fields(model: type[SQLModel]) -> tuple[Table, dict[str, tuple[Any, Any]]]:
    """``model``'s table and ``(default, default_factory)`` of each of its fields."""
    fields = {
        name: (None if info.default is PydanticUndefined else info.default, info.default_factory)
        for name, info in model.model_fields.items()
    }
    return model.__table__, fields
