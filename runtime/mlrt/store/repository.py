"""Reads and writes of the metadata store, in one place.

Every state change of a run goes through :meth:`Store.transition`, which
checks it against the state machine and writes the event row in the same
transaction, so the event history and the run row never disagree.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import operator
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Connection, String, bindparam, cast, delete, func, literal, text, union_all, update
from sqlmodel import Session, col, select

from mlrt.states import TERMINAL_STATES, RunState, check_transition
from mlrt.store.engine import create_db_engine, database_url, migrate
from mlrt.store.models import (
    Artifact,
    Attempt,
    ControllerHeartbeat,
    Event,
    Job,
    Metric,
    MetricBatch,
    MetricSummary,
    Param,
    ProjectLimit,
    Row,
    Run,
    SourceBundle,
    nan_as_sqlite_stores_it,
    row_of,
    row_values,
    utcnow,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlrt.run_search import RunPage, RunQuery

TERMINAL = sorted(state.value for state in TERMINAL_STATES)
"""The terminal states as the database stores them (for ``NOT IN`` queries)."""
ACTIVE = sorted(state.value for state in RunState if state not in TERMINAL_STATES)
"""The other states: ``state IN ACTIVE`` finds active runs through the state index, so the
queries of a reconcile pass cost the same however many finished runs the database holds."""
STALE_HEARTBEATS_KEPT = timedelta(hours=1)
"""A controller process silent this long is forgotten (its runs were reaped long before)."""
_METRIC_COPY_TYPES = ("text", "text", "int4", "float8", "float8")
"""PostgreSQL types of the ``metrics`` columns a binary COPY writes (run_id, key, step, value, timestamp)."""
_FLOAT8_ARRAY_OID = 1022
"""PostgreSQL's ``float8[]`` (``pg_type.oid``)."""


class BusySignature(NamedTuple):
    """What :meth:`Store.active_signature` reads of the runs a controller owns."""

    rows: list[tuple[str, str, bool]]
    """``(id, state, cancel_requested)`` of each run :meth:`Store.busy_runs` returns, sorted."""
    queued: int
    """How many of its other runs are queued (without a cancel request)."""
    digest: str | None
    """A digest of ``rows`` computed by the database in the same query (PostgreSQL; None on
    SQLite): :meth:`Store.active_digest` gives it again without reading the rows."""


def _float8_array(data: Any) -> Any:
    """A one-dimensional ``float8[]`` without NULLs in PostgreSQL's binary form, as a numpy array:
    a 20-byte header (dimensions, NULL flag, element type, length, lower bound), then each
    element as an int32 length (8) and a big-endian float8."""
    import numpy as np

    element = np.dtype([("length", ">i4"), ("value", ">f8")])
    return np.frombuffer(data, dtype=element, offset=20)["value"].astype(np.float64)


@functools.cache
def _float8_array_loader() -> type:
    """The psycopg loader of binary ``float8[]`` values as numpy arrays (:func:`_float8_array`);
    made on first use, as psycopg is only there for PostgreSQL."""
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    class Float8ArrayLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> Any:
            return _float8_array(data)

    return Float8ArrayLoader


# A batch's points are added to their keys' summary rows (models.MetricSummary) in the batch's
# transaction, keys in order (so two writers of one run lock the rows in the same order). Every
# expression of SET reads the row as it was: last_value compares against the old last_step.
_SUMMARY_UPSERT = (
    "INSERT INTO metric_summaries (run_id, key, points, low, high, last_step, last_value)"
    " VALUES ({marks}) ON CONFLICT (run_id, key) DO UPDATE SET"
    " points = metric_summaries.points + excluded.points,"
    " low = {least}(metric_summaries.low, excluded.low),"
    " high = {greatest}(metric_summaries.high, excluded.high),"
    " last_step = {greatest}(metric_summaries.last_step, excluded.last_step),"
    " last_value = CASE WHEN excluded.last_step >= metric_summaries.last_step"
    " THEN excluded.last_value ELSE metric_summaries.last_value END"
)
# The summary rows of some keys of a run made again from the points stored (after a delete).
_SUMMARY_REMAKE = text(
    "INSERT INTO metric_summaries (run_id, key, points, low, high, last_step, last_value)"
    " SELECT m.run_id, m.key, COUNT(*), MIN(m.value), MAX(m.value), MAX(m.step),"
    " (SELECT l.value FROM metrics l WHERE l.run_id = m.run_id AND l.key = m.key"
    " ORDER BY l.step DESC, l.id DESC LIMIT 1)"
    " FROM metrics m WHERE m.run_id = :run_id AND m.key IN :keys GROUP BY m.run_id, m.key"
    " ON CONFLICT (run_id, key) DO UPDATE SET points = excluded.points, low = excluded.low,"
    " high = excluded.high, last_step = excluded.last_step, last_value = excluded.last_value"
).bindparams(bindparam("keys", expanding=True))


def _metric_rows(run_id: str, points: Iterable[tuple[str, int, float, float]]) -> tuple[list[tuple], list[tuple]]:
    """The rows of ``points`` for the ``metrics`` table, and what they add to each key's summary:
    ``(run_id, key, points, low, high, last_step, last_value)`` by key.

    One pass in Python groups the points by key; the rest runs in C (``min``, ``max`` and the
    point of the highest step, the last one of equal steps). NaN counts as above every number,
    as in PostgreSQL's ``MIN`` and ``MAX`` (SQLite cannot store it)."""
    rows = [(run_id, key, step, value, stamp) for key, step, value, stamp in points]
    groups: dict[str, list[tuple]] = {}
    for row in rows:
        group = groups.get(row[1])
        if group is None:
            groups[row[1]] = [row]
        else:
            group.append(row)
    summaries = []
    for key in sorted(groups):
        group = groups[key]
        values = list(map(_VALUE, group))
        low, high = min(values), max(values)
        if any(map(math.isnan, values)):
            numbers = [value for value in values if not math.isnan(value)]
            low, high = (min(numbers) if numbers else math.nan), math.nan
        last = max(reversed(group), key=_STEP)
        summaries.append((run_id, key, len(group), low, high, last[2], last[3]))
    return rows, summaries


_STEP, _VALUE = operator.itemgetter(2), operator.itemgetter(3)
"""The step and the value of a ``metrics`` row as :func:`_metric_rows` makes it."""


def _with_sqlite_nans(rows: list[tuple], summaries: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    """:func:`_metric_rows`'s rows and summaries with each NaN as SQLite keeps it
    (:data:`~mlrt.store.models.SQLITE_NAN`); the same lists when they hold none."""
    if not any(summary[4] != summary[4] for summary in summaries):
        return rows, summaries  # a key's high is NaN where any of its values is
    rows = [(*row[:3], nan_as_sqlite_stores_it(row[3]), row[4]) for row in rows]
    summaries = [
        (*summary[:3], *map(nan_as_sqlite_stores_it, summary[3:5]), summary[5], nan_as_sqlite_stores_it(summary[6]))
        for summary in summaries
    ]
    return rows, summaries


METRIC_PAGE = 10_000
"""Points per query of :meth:`Store.iter_metric_points`."""


def _float_values(rows: list[tuple]) -> list[tuple]:
    """SQLite's rows of ``(key, step, value, timestamp)`` with a NaN kept as text made a float again."""
    if not any(row[2].__class__ is str for row in rows):
        return rows
    return [
        (key, step, float(value), stamp) if value.__class__ is str else (key, step, value, stamp)
        for key, step, value, stamp in rows
    ]


def _read_ahead(pages: Iterator[list[tuple]]) -> Iterator[list[tuple]]:
    """The pages of ``pages``, each next one read in a thread while the caller works on the
    one it has: the database's reading and the caller's writing overlap. A caller that stops
    early waits for the one read under way, never more."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="mlrt-fetch") as pool:
        pending = pool.submit(next, pages, None)
        while (page := pending.result()) is not None:
            pending = pool.submit(next, pages, None)
            yield page


class NotFound(LookupError):
    """No job or run has the given id."""


def param_text(value: Any) -> str:
    """How a parameter value is stored: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


class Store:
    """The metadata database of jobs, runs, attempts, params, metrics, artifacts and events."""

    def __init__(self, url: str | None = None, *, migrate_schema: bool = True):
        self.url = database_url(url)
        self.engine = create_db_engine(self.url)
        # PostgreSQL: reads in autocommit. A transaction around one SELECT costs a BEGIN and a
        # ROLLBACK, each a round trip, for nothing under READ COMMITTED, where every statement
        # takes its own snapshot anyway. SQLite keeps its transactions (snapshots across
        # statements, and switching its mode costs a PRAGMA per connection).
        self._postgres = self.engine.dialect.name == "postgresql"
        self._autocommit = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT") if self._postgres else self.engine
        )
        if migrate_schema:
            migrate(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session
            session.commit()

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only, never committed. On PostgreSQL each of its statements runs
        on its own (autocommit), one round trip each, with the snapshot it would have had in a
        READ COMMITTED transaction; so write through :meth:`session`, never here: a flush would
        be kept at once, not as one transaction."""
        with Session(self._autocommit, expire_on_commit=False) as session:
            yield session

    def read_connection(self) -> Connection:
        """A connection for Core reads only, like :meth:`read_session` (use it as a context manager)."""
        return self._autocommit.connect()

    @contextmanager
    def _rows_connection(self) -> Iterator[Connection]:
        """A connection for one :func:`_write_rows`, which is atomic either way: on PostgreSQL
        in autocommit, where it is one statement and so its own transaction (no ``BEGIN`` and
        ``COMMIT`` round trips around it); on SQLite in a transaction around its statements."""
        with self._autocommit.connect() if self._postgres else self.engine.begin() as conn:
            yield conn

    # -- jobs and runs -------------------------------------------------------

    def create_job(self, job: Job | Row, run: Run | Row, params: dict[str, Any]) -> None:
        """Insert a job with its run (QUEUED) and initial params, and the first event, at once
        (:func:`_write_rows`: on PostgreSQL one statement, whose compiled form is cached). The
        job and the run are model instances or :func:`~mlrt.store.models.row_of` rows."""
        _, values = row_values(run)
        run_id, state = values["id"], values["state"]
        rows = [job, run]
        rows.extend(row_of(Param, run_id=run_id, key=key, value=param_text(value)) for key, value in params.items())
        rows.append(row_of(Event, run_id=run_id, to_state=state, reason="submitted"))
        with self._rows_connection() as conn:
            _write_rows(conn, rows)

    def seal_clear_secrets(self) -> int:
        """Encrypt the ``spec.env`` values of jobs stored before mlrt encrypted them, and hide
        them in those jobs' submitted text, ``--set`` overrides and attempts' stored requests
        (see :mod:`mlrt.secrets`); returns how many jobs changed. Run by the controller
        service at start-up; rows already sealed are left as they are."""
        from mlrt.secrets import holds_clear_values, mask_overrides, mask_request, mask_submitted, seal_resolved

        changed = 0
        with self.session() as s:
            for job in list(s.exec(select(Job))):
                if not holds_clear_values(job.spec_resolved):
                    continue
                job.spec_resolved = seal_resolved(job.spec_resolved, keep_sealed=True)
                job.spec_submitted = mask_submitted(job.spec_submitted)
                spec = job.spec_resolved.get("spec") or {}
                for run in s.exec(select(Run).where(Run.job_id == job.id)):
                    run.record = {**run.record, "overrides": mask_overrides(run.record.get("overrides") or [])}
                    for attempt in s.exec(select(Attempt).where(Attempt.run_id == run.id)):
                        attempt.request = mask_request(json.loads(json.dumps(attempt.request)), spec)
                changed += 1
        return changed

    def resolved_specs(self, job_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """The resolved spec of each of ``job_ids``, in one query."""
        if not job_ids:
            return {}
        with self.read_session() as s:
            rows = s.exec(select(Job.id, Job.spec_resolved).where(col(Job.id).in_(list(job_ids))))
            return {job_id: spec for job_id, spec in rows}

    def get_job(self, job_id: str) -> Job:
        with self.read_session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            return job

    def get_run(self, run_id: str) -> Run:
        with self.read_session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            return run

    def list_runs(
        self,
        *,
        limit: int = 50,
        states: Sequence[str] = (),
        job_id: str | None = None,
        project: str | None = None,
    ) -> list[Run]:
        """Newest first; ``project`` keeps only the runs of that project's jobs."""
        with self.read_session() as s:
            query = select(Run).order_by(col(Run.created_at).desc(), col(Run.id).desc()).limit(limit)
            if project is not None:
                query = query.join(Job, Job.id == Run.job_id).where(Job.project == project)
            if states:
                query = query.where(col(Run.state).in_(list(states)))
            if job_id:
                query = query.where((Run.job_id == job_id) | (Run.parent_id == job_id))
            return list(s.exec(query))

    def find_runs(self, query: RunQuery) -> RunPage:
        """The runs matching ``query``, one page of them (see :mod:`mlrt.run_search`)."""
        from mlrt.run_search import find_runs

        return find_runs(self, query)

    def trials(self, parent_id: str, *, unfinished_or: Iterable[str] | None = None) -> list[Run]:
        """The trial runs of a tuning run, by trial number.

        With ``unfinished_or``, only the trials not terminal yet plus those with
        the given ids, whatever their state: a caller that keeps finished trials
        in memory (they never change again) passes the ids it last saw unfinished."""
        query = select(Run).where(Run.parent_id == parent_id)
        if unfinished_or is not None:
            query = query.where(col(Run.state).not_in(TERMINAL) | col(Run.id).in_(list(unfinished_or)))
        with self.read_session() as s:
            return list(s.exec(query.order_by(Run.trial)))

    def active_runs(self, owner: str | None = None) -> list[Run]:
        """Runs not yet terminal, optionally only those a given controller owns."""
        with self.read_session() as s:
            query = select(Run).where(col(Run.state).in_(ACTIVE))
            if owner is not None:
                query = query.where(Run.owner == owner)
            return list(s.exec(query.order_by(Run.created_at)))

    def busy_runs(self, owner: str) -> list[Run]:
        """The active runs of ``owner`` that a reconcile pass handles one by one: every state
        but QUEUED, and the QUEUED runs that are not waiting for admission (tuning runs, runs
        whose cancel was requested). The rest of the queue is read by :meth:`queue_heads`, so a
        pass costs the same however long the queue is."""
        with self.read_session() as s:
            return list(s.exec(self._busy_query(owner, Run).order_by(Run.created_at)))

    def queue_heads(self, owner: str, backends: Sequence[str], depth: int, now: Any) -> list[tuple[Run, str | None]]:
        """``(run, project)`` for the first ``depth`` runs of each (project, backend) queue of
        ``owner`` that admission could launch now: QUEUED, not a tuning run, no cancel
        requested, past its ``not_before``, on one of ``backends`` (or with no backend
        recorded). Each queue is in launch order within a project (priority, then age), so
        admission's order over all of them is its order over the whole queue, and the
        database sorts the queue, not Python."""
        position = (
            func.row_number()
            .over(
                partition_by=(Job.project, Run.backend),
                order_by=(col(Run.priority).desc(), col(Run.created_at), col(Run.id)),
            )
            .label("position")
        )
        queued = (
            select(Run.id, position)
            .join(Job, Job.id == Run.job_id)
            .where(Run.state == RunState.QUEUED.value, Run.owner == owner, Job.kind != "TuningJob")
            .where(~col(Run.cancel_requested), col(Run.not_before).is_(None) | (col(Run.not_before) <= now))
            .where(col(Run.backend).in_(list(backends)) | col(Run.backend).is_(None))
            .subquery()
        )
        with self.read_session() as s:
            query = (
                select(Run, Job.project)
                .join(queued, queued.c.id == Run.id)
                .join(Job, Job.id == Run.job_id)
                .where(queued.c.position <= depth)
                .order_by(Run.created_at)
            )
            return [(run, project) for run, project in s.exec(query)]

    def busy_runs_by_id(self, run_ids: Collection[str]) -> list[Run]:
        """The runs of ``run_ids`` (those of :meth:`busy_runs` a pass has to handle), oldest first."""
        if not run_ids:
            return []
        with self.read_session() as s:
            query = select(Run).where(col(Run.id).in_(list(run_ids)))
            return list(s.exec(query.order_by(Run.created_at)))

    def active_signature(self, owner: str) -> BusySignature:
        """What a pass compares before and after to see whether anything it owns changed (one
        query, of these columns only): see :class:`BusySignature`."""
        queued = self._queued_count(owner)
        busy = self._busy_query(owner, Run.id, Run.state, Run.cancel_requested)
        digest = self._digest_query(owner)
        with self.read_session() as s:
            rows = list(s.connection().execute(union_all(busy, queued, *([digest] if digest is not None else []))))
        # The two rows without an id: the queued count (False) and the digest (True).
        tail = {bool(tag): text for run_id, text, tag in rows if run_id is None}
        busy_rows = ((run_id, state, bool(cancel)) for run_id, state, cancel in rows if run_id is not None)
        return BusySignature(sorted(busy_rows), int(tail[False]), tail.get(True))

    def active_digest(self, owner: str) -> tuple[int, str] | None:
        """``(queued, digest)`` of :meth:`active_signature` as it is now, in one small query
        (PostgreSQL); None on SQLite. While they stay the same, so (but for a chance of 2**-64
        per change) does the signature: a pass learns that nothing changed without reading
        a row per run."""
        digest = self._digest_query(owner)
        if digest is None:
            return None
        with self.read_session() as s:
            rows = list(s.connection().execute(union_all(self._queued_count(owner), digest)))
        tail = {bool(tag): text for _, text, tag in rows}
        return int(tail[False]), tail[True]

    def _busy_query(self, owner: str, *columns: Any) -> Any:
        """``columns`` of the runs :meth:`busy_runs` returns, unordered: ``owner``'s active runs
        but the queued training runs without a cancel request."""
        # The kind is looked up for the queued runs only (EXISTS, by the jobs' key): a join
        # would read every job, finished ones included, once thousands of runs are active.
        tuning = select(Job.id).where(Job.id == Run.job_id, Job.kind == "TuningJob").exists()
        return (
            select(*columns)
            .select_from(Run)
            .where(col(Run.state).in_(ACTIVE), Run.owner == owner)
            .where((Run.state != RunState.QUEUED.value) | col(Run.cancel_requested) | tuning)
        )

    @staticmethod
    def _queued_count(owner: str) -> Any:
        """``(NULL, how many of owner's runs are queued without a cancel request, as text, false)``."""
        return (
            select(literal(None, String), cast(func.count(), String), literal(False))
            .select_from(Run)
            .where(Run.state == RunState.QUEUED.value, Run.owner == owner, ~col(Run.cancel_requested))
        )

    def _digest_query(self, owner: str) -> Any | None:
        """``(NULL, digest, true)`` of :meth:`_busy_query`'s rows, on PostgreSQL: their count and
        the sum of a 64-bit hash (``hashtextextended``) of each one's id, state and cancel
        request, as text; None on SQLite, which has no hash function (an embedded controller
        drives few runs: it reads them)."""
        if self.engine.dialect.name != "postgresql":
            return None
        row = Run.id + ":" + Run.state + ":" + cast(Run.cancel_requested, String)
        total = func.coalesce(func.sum(func.hashtextextended(row, 0)), 0)
        return self._busy_query(
            owner, literal(None, String), cast(func.count(), String) + ":" + cast(total, String), literal(True)
        )

    def project_runs_not_owned_by(self, owner: str) -> list[Run]:
        """Active runs of jobs submitted through the API (they have a project) that
        ``owner`` does not drive: new submissions, and runs of a former leader."""
        with self.read_session() as s:
            query = (
                select(Run)
                .join(Job, Job.id == Run.job_id)
                .where(col(Job.project).is_not(None), col(Run.state).in_(ACTIVE))
                .where(col(Run.owner).is_(None) | (Run.owner != owner))
                .order_by(Run.created_at)
            )
            return list(s.exec(query))

    def projects_of(self, run_ids: Sequence[str]) -> dict[str, str | None]:
        """The project of each run's job (None for local jobs); unknown runs are left out."""
        if not run_ids:
            return {}
        with self.read_session() as s:
            rows = s.exec(select(Run.id, Job.project).join(Job, Job.id == Run.job_id).where(col(Run.id).in_(run_ids)))
            return {run_id: project for run_id, project in rows}

    def active_usage(
        self, states: Sequence[str], host_backends: Collection[str], host: str
    ) -> tuple[list[tuple[str | None, int, float, int, int]], tuple[int, float, int, int]]:
        """What the runs in ``states`` hold, summed by the database (tuning runs left out: their
        trials are the runs that hold resources), for admission: ``(project, runs, cpus,
        memory, gpus)`` per project, and ``(runs, cpus, memory, gpus)`` of those of
        ``host_backends`` driven by a controller on ``host`` (an owner ``host:pid:start``).
        Two grouped queries: a pass costs one row per project, however many runs are active."""
        sums = (func.count(), func.coalesce(func.sum(Run.cpus), 0.0), func.sum(Run.memory), func.sum(Run.gpus))

        def active(*columns: Any) -> Any:
            return (
                select(*columns)
                .select_from(Run)
                .join(Job, Job.id == Run.job_id)
                .where(col(Run.state).in_(list(states)), Job.kind != "TuningJob")
            )

        with self.read_session() as s:
            conn = s.connection()
            projects = [
                (project, int(runs), float(cpus), int(memory or 0), int(gpus or 0))
                for project, runs, cpus, memory, gpus in conn.execute(active(Job.project, *sums).group_by(Job.project))
            ]
            machine = (0, 0.0, 0, 0)
            if host_backends:
                runs, cpus, memory, gpus = conn.execute(
                    active(*sums)
                    .where(col(Run.backend).in_(list(host_backends)))
                    .where(col(Run.owner).startswith(f"{host}:", autoescape=True))
                ).one()
                machine = (int(runs), float(cpus), int(memory or 0), int(gpus or 0))
        return projects, machine

    def project_limits(self) -> list[ProjectLimit]:
        """Every project's limits (projects without a row have none)."""
        with self.read_session() as s:
            return list(s.exec(select(ProjectLimit).order_by(ProjectLimit.project)))

    def set_project_limit(self, project: str, **limits: float | int | None) -> ProjectLimit:
        """Set (or with every limit None, remove) the limits of ``project``."""
        with self.session() as s:
            row = s.get(ProjectLimit, project)
            if all(value is None for value in limits.values()):
                if row is not None:
                    s.delete(row)
                return ProjectLimit(project=project)
            row = row or ProjectLimit(project=project)
            for key, value in limits.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            s.add(row)
            return row

    def transition(self, run_id: str, to: RunState, reason: str, **fields: Any) -> None:
        """Move a run to ``to`` (checked against the state machine), record the event, set ``fields``."""
        self.transitions([(run_id, to, reason, fields)])

    def transitions(self, changes: Sequence[tuple[str, RunState, str, dict[str, Any]]]) -> None:
        """:meth:`transition` for several runs, ``(run id, to, reason, fields)`` each, in one
        transaction: all are made or, where one is refused, none."""
        with self.engine.begin() as conn:
            _transitions(conn, changes)

    def record_running(
        self,
        attempts: Sequence[tuple[int, dict[str, Any]]],
        changes: Sequence[tuple[str, RunState, str, dict[str, Any]]],
    ) -> None:
        """Attempts whose workers started, ``(attempt id, handle)`` each (state RUNNING), and the
        runs' ``changes`` as :meth:`transitions` makes them, in one transaction."""
        with self.engine.begin() as conn:
            if attempts:
                table = Attempt.__table__
                started = update(table).where(table.c.id == bindparam("attempt_id"))
                rows = [{"attempt_id": attempt_id, "started_handle": handle} for attempt_id, handle in attempts]
                conn.execute(started.values(state=RunState.RUNNING.value, handle=bindparam("started_handle")), rows)
            if changes:
                _transitions(conn, changes)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set fields of a run that are not its state (owner, record, cancel flag...)."""
        with self.session() as s:
            s.exec(update(Run).where(Run.id == run_id).values(**fields))  # type: ignore[call-overload]

    def transfer_owner(self, run_id: str, old: str | None, new: str) -> bool:
        """Make ``new`` the owner of ``run_id`` if ``old`` still owns it; False when
        another process took it first (compare-and-set, so one adopter wins)."""
        with self.session() as s:
            current = col(Run.owner).is_(None) if old is None else Run.owner == old
            result = s.exec(update(Run).where(Run.id == run_id, current).values(owner=new, heartbeat_at=utcnow()))  # type: ignore[call-overload]
            return result.rowcount == 1

    def claim_unowned(self, run_ids: Sequence[str], owner: str) -> None:
        """Make ``owner`` the owner of those of ``run_ids`` that no one owns (one statement;
        a run another process took first keeps its owner)."""
        for start in range(0, len(run_ids), 1000):  # bounded statements, on SQLite too
            with self.session() as s:
                claim = update(Run).where(col(Run.id).in_(run_ids[start : start + 1000]), col(Run.owner).is_(None))
                s.exec(claim.values(owner=owner, heartbeat_at=utcnow()))  # type: ignore[call-overload]

    def heartbeat(self, owner: str) -> None:
        """Say that the controller process ``owner`` is alive (one row, however many runs it
        drives), and forget the processes that have not said so for an hour."""
        now = utcnow()
        with self.session() as s:
            conn = s.connection()
            row = _upsertable_insert(conn)(ControllerHeartbeat).values(owner=owner, heartbeat_at=now)
            conn.execute(row.on_conflict_do_update(index_elements=["owner"], set_={"heartbeat_at": now}))
            stale = col(ControllerHeartbeat.heartbeat_at) < now - STALE_HEARTBEATS_KEPT
            conn.execute(delete(ControllerHeartbeat).where(stale))

    def owner_heartbeats(self) -> dict[str, datetime]:
        """When each controller process last said it was alive (:meth:`heartbeat`)."""
        with self.read_session() as s:
            rows = s.exec(select(ControllerHeartbeat.owner, ControllerHeartbeat.heartbeat_at))
            return {owner: at for owner, at in rows}

    def add_event(self, run_id: str, reason: str) -> None:
        """Record something notable that is not a state change."""
        with self.session() as s:
            s.add(Event(run_id=run_id, reason=reason))

    def events(self, run_id: str) -> list[Event]:
        with self.read_session() as s:
            return list(s.exec(select(Event).where(Event.run_id == run_id).order_by(Event.id)))

    # -- attempts --------------------------------------------------------------

    def add_attempt(
        self, attempt: Attempt, *, record: dict[str, Any] | None = None, rows: Sequence[Any] = ()
    ) -> Attempt:
        """Insert ``attempt``; it comes back with its id (every other column is set here). In the
        same transaction: what planning it added to the run's ``record`` and ``rows`` for its
        workers (see :meth:`keep_planned`)."""
        with self._rows_connection() as conn:
            attempt.id = _write_rows(conn, [*rows, attempt], run_record=_run_record(attempt.run_id, record))
            return attempt

    def keep_planned(self, run_id: str, record: dict[str, Any] | None, rows: Sequence[Any]) -> None:
        """Store what planning an attempt of ``run_id`` made: the run's new ``record`` (None: it
        did not change) and ``rows`` for its workers, such as their tracking token."""
        if record is None and not rows:
            return
        with self._rows_connection() as conn:
            _write_rows(conn, rows, run_record=_run_record(run_id, record))

    def delete_attempt(self, attempt_id: int) -> None:
        """Remove an attempt that never started (its launch is to be made again under its number)."""
        with self.session() as s:
            s.exec(delete(Attempt).where(Attempt.id == attempt_id))  # type: ignore[call-overload]

    def update_attempt(self, attempt_id: int, **fields: Any) -> None:
        with self.session() as s:
            s.exec(update(Attempt).where(Attempt.id == attempt_id).values(**fields))  # type: ignore[call-overload]

    def finish_attempt(
        self, attempt_id: int, state: RunState, reason: str, exit_code: int | None, log_tail: str = ""
    ) -> None:
        """Close an attempt; ``log_tail``: the failing worker's last log lines, for a failed one."""
        with self.session() as s:
            s.exec(
                update(Attempt)
                .where(Attempt.id == attempt_id)
                .values(state=state.value, reason=reason, exit_code=exit_code, ended_at=utcnow(), log_tail=log_tail)
            )  # type: ignore[call-overload]

    def attempts(self, run_id: str) -> list[Attempt]:
        with self.read_session() as s:
            return list(s.exec(select(Attempt).where(Attempt.run_id == run_id).order_by(Attempt.number)))

    def latest_attempt(self, run_id: str) -> Attempt | None:
        with self.read_session() as s:
            query = select(Attempt).where(Attempt.run_id == run_id).order_by(col(Attempt.number).desc())
            return s.exec(query.limit(1)).first()

    # -- params, metrics, artifacts ------------------------------------------

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Insert or replace params of a run; :class:`NotFound` when there is no run ``run_id``."""
        if not params:
            return
        with self.session() as s:
            if s.get(Run, run_id) is None:
                raise NotFound(f"no run {run_id!r}")
            s.exec(delete(Param).where(Param.run_id == run_id, col(Param.key).in_(list(params))))  # type: ignore[call-overload]
            s.add_all(Param(run_id=run_id, key=k, value=param_text(v)) for k, v in params.items())

    def params(self, run_id: str) -> dict[str, str]:
        with self.read_session() as s:
            return {p.key: p.value for p in s.exec(select(Param).where(Param.run_id == run_id))}

    def insert_metrics(
        self, run_id: str, points: Iterable[tuple[str, int, float, float]], *, batch_id: str | None = None
    ) -> int:
        """Insert ``(key, step, value, timestamp)`` points in one transaction; returns how many were stored.

        With ``batch_id`` (the SDK sends a uuid4 per batch) the id is stored in
        the same transaction, and a batch whose id this run already has stores
        nothing and returns 0: a batch sent again after an ambiguous failure
        (the commit happened, the answer was lost) is never stored twice.

        Raises :class:`NotFound` when there is no run ``run_id``: the points' table
        has no foreign key (see :class:`~mlrt.store.models.Metric`), so the run is
        looked up here, once per batch. Each key's summary row is updated in the
        same transaction (:meth:`metric_summary`)."""
        rows, summaries = _metric_rows(run_id, points)
        if not rows:
            return 0
        postgres = self.engine.dialect.driver == "psycopg"
        marker = "%s" if postgres or self.engine.dialect.paramstyle != "qmark" else "?"
        with self.engine.begin() as conn:
            if conn.exec_driver_sql(f"SELECT 1 FROM runs WHERE id = {marker}", (run_id,)).first() is None:
                raise NotFound(f"no run {run_id!r}")
            if batch_id is not None and not self._claim_batch(conn, run_id, batch_id, len(rows)):
                return 0
            if postgres:
                # COPY: 1.4-2.3x the points/s of executemany (bench/controller_service.py); in
                # binary with the columns' types, a third of text COPY's client CPU and ~6% less
                # of the server's (bench/metric_logging.py).
                with conn.connection.driver_connection.cursor() as cursor:
                    copy_sql = "COPY metrics (run_id, key, step, value, timestamp) FROM STDIN (FORMAT BINARY)"
                    with cursor.copy(copy_sql) as copy:
                        copy.set_types(_METRIC_COPY_TYPES)
                        for row in rows:
                            copy.write_row(row)
            else:
                # The driver's executemany with tuples: half the cost of SQLAlchemy's
                # per-row parameter processing, which matters for SDK batches.
                rows, summaries = _with_sqlite_nans(rows, summaries)
                sql = f"INSERT INTO metrics (run_id, key, step, value, timestamp) VALUES ({', '.join([marker] * 5)})"
                conn.exec_driver_sql(sql, rows)
            least, greatest = ("LEAST", "GREATEST") if postgres else ("MIN", "MAX")
            upsert = _SUMMARY_UPSERT.format(marks=", ".join([marker] * 7), least=least, greatest=greatest)
            conn.exec_driver_sql(upsert, summaries)
        return len(rows)

    @staticmethod
    def _claim_batch(conn: Any, run_id: str, batch_id: str, points: int) -> bool:
        """Record ``batch_id`` for ``run_id`` in the open transaction; False when it is there already.

        ``ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL): a second sender of the
        same batch waits on the first one's row lock and then finds it stored."""
        claimed = conn.execute(
            _upsertable_insert(conn)(MetricBatch)
            .values(run_id=run_id, batch_id=batch_id, points=points, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["run_id", "batch_id"])
            .returning(MetricBatch.batch_id)
        )
        return claimed.first() is not None

    def delete_metrics(self, run_id: str, keys: list[str], from_step: int) -> None:
        """Delete the points of ``keys`` at ``from_step`` or later (to rewrite a series on resume),
        and make those keys' summary rows again from the points left."""
        with self.session() as s:
            s.exec(
                delete(Metric).where(Metric.run_id == run_id, col(Metric.key).in_(keys), col(Metric.step) >= from_step)
            )  # type: ignore[call-overload]
            s.exec(delete(MetricSummary).where(MetricSummary.run_id == run_id, col(MetricSummary.key).in_(keys)))  # type: ignore[call-overload]
            if keys:
                s.connection().execute(_SUMMARY_REMAKE, {"run_id": run_id, "keys": list(keys)})

    def metrics(self, run_id: str, key: str | None = None) -> list[Metric]:
        with self.session() as s:
            query = select(Metric).where(Metric.run_id == run_id)
            if key:
                query = query.where(Metric.key == key)
            return list(s.exec(query.order_by(Metric.key, Metric.step, Metric.id)))

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        """The last value of each metric key of a run: the value at the highest step, of equal steps
        the one logged last (as :meth:`metric_summary`'s ``last``)."""
        return self.latest_metrics_of([run_id]).get(run_id, {})

    def last_values(self, run_ids: list[str], key: str) -> dict[str, float]:
        """The last value of metric ``key`` logged by each of ``run_ids``, in one query
        (runs that logged none are left out)."""
        if not run_ids:
            return {}
        query = select(MetricSummary.run_id, MetricSummary.last_value).where(
            col(MetricSummary.run_id).in_(list(run_ids)), MetricSummary.key == key
        )
        with self.read_connection() as conn:
            return {run_id: value for run_id, value in conn.execute(query)}

    def max_steps_of(self, run_ids: Collection[str]) -> dict[str, dict[str, int]]:
        """:meth:`max_steps` of several runs in one query (runs without metrics are left out)."""
        found: dict[str, dict[str, int]] = {}
        if not run_ids:
            return found
        summaries = MetricSummary.__table__.c
        query = select(summaries.run_id, summaries.key, summaries.last_step).where(summaries.run_id.in_(list(run_ids)))
        with self.read_connection() as conn:
            for run_id, key, step in conn.execute(query):
                found.setdefault(run_id, {})[key] = int(step)
        return found

    def max_steps(self, run_id: str) -> dict[str, int]:
        """The highest step logged so far for each metric key (to continue a series)."""
        return self.max_steps_of([run_id]).get(run_id, {})

    def params_of(self, run_ids: list[str]) -> dict[str, dict[str, str]]:
        """The params of each of ``run_ids``, in one query (runs without params are left out)."""
        found: dict[str, dict[str, str]] = {}
        if not run_ids:
            return found
        with self.read_connection() as conn:
            rows = conn.execute(select(Param.run_id, Param.key, Param.value).where(col(Param.run_id).in_(run_ids)))
            for run_id, key, value in rows:
                found.setdefault(run_id, {})[key] = value
        return found

    def latest_metrics_of(self, run_ids: list[str]) -> dict[str, dict[str, float]]:
        """:meth:`latest_metrics` of each of ``run_ids``, in one query (runs without metrics are left out)."""
        found: dict[str, dict[str, float]] = {}
        if not run_ids:
            return found
        query = select(MetricSummary.run_id, MetricSummary.key, MetricSummary.last_value).where(
            col(MetricSummary.run_id).in_(list(run_ids))
        )
        with self.read_connection() as conn:
            for run_id, key, value in conn.execute(query.order_by(MetricSummary.run_id, MetricSummary.key)):
                found.setdefault(run_id, {})[key] = value
        return found

    def metric_summary(self, run_id: str) -> list[dict[str, Any]]:
        """One row per metric key of a run, by key: ``key``, ``points`` (how many), ``last`` (the
        value at the highest step; of equal steps, the one logged last), ``min`` and ``max``.

        Read from the keys' summary rows, which every write keeps up to date: no
        point is read, so a run with a million points costs what one with ten does."""
        query = (
            select(
                MetricSummary.key,
                MetricSummary.points,
                MetricSummary.last_value,
                MetricSummary.low,
                MetricSummary.high,
            )
            .where(MetricSummary.run_id == run_id)
            .order_by(MetricSummary.key)
        )
        with self.read_connection() as conn:
            return [
                {"key": key, "points": points, "last": last, "min": low, "max": high}
                for key, points, last, low, high in conn.execute(query)
            ]

    def iter_metric_points(
        self, run_id: str, key: str | None = None, *, every: int = 1
    ) -> Iterator[tuple[str, int, float, float]]:
        """``(key, step, value, timestamp)`` of a run's points (one key's, or every key's), by key
        then step (points of equal step in the order they were stored), read as they are consumed,
        so a long series is never held whole. ``every=N`` keeps the 1st, (N+1)th, ... point of each
        key.

        Read in pages of :data:`METRIC_PAGE` points, each one query that goes on where the page
        before ended, in the order of the points' ``(run_id, key, step, id)`` index: a connection
        is held only while a page is read, never while the caller works or waits, so a reader that
        is slow to take the points (a client on a slow network) holds none of the pool that every
        other request shares. Each page is its own snapshot: of the points a live run writes
        while it is read, those after the read's position are read and those before it are not
        (two writers storing the same key and step at once, as a page ends there, may have a
        point read twice). On PostgreSQL the next page is read while the caller works on this one.

        Read through the driver's cursor: its rows are plain tuples of the column types, and
        skipping SQLAlchemy's row objects halves the cost per point. PostgreSQL sends them in its
        binary format: a third of the client's CPU of parsing a million points' text."""
        postgres = self.engine.dialect.name == "postgresql"
        pages = self._metric_pages(run_id, key)
        current, index = None, 0
        for page in _read_ahead(pages) if postgres else pages:
            if every <= 1:
                yield from page
                continue
            for point in page:
                if point[0] != current:
                    current, index = point[0], 0
                if index % every == 0:
                    yield point
                index += 1

    def _metric_pages(self, run_id: str, key: str | None) -> Iterator[list[tuple[str, int, float, float]]]:
        """The pages of :meth:`iter_metric_points`, each read on a connection of its own.

        A page starts at the ``(key, step)`` of the last point of the page before, past the
        points of that key and step already read (``OFFSET``, almost always 1): the rows need
        no ``id``, which would cost a third more CPU per point to read and then leave out."""
        marker = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        postgres = self.engine.dialect.name == "postgresql"
        select_points = f"SELECT key, step, value, timestamp FROM metrics WHERE run_id = {marker}"
        first: tuple = (run_id,)
        if key:
            select_points += f" AND key = {marker}"
            first = (run_id, key)
        # One range of the (run_id, key, step, id) index on both databases. With ``key = ?`` too,
        # PostgreSQL would start a row comparison's range at the key's first point.
        after = f" AND step >= {marker}" if key else f" AND (key, step) >= ({marker}, {marker})"
        order = " ORDER BY key, step, id"
        sql, args = f"{select_points}{order} LIMIT {METRIC_PAGE}", first
        at, read_there = None, 0  # the (key, step) a page ended at, and how many points of it were read
        while True:
            with self.read_connection() as conn:
                driver = conn.connection.driver_connection
                cursor = driver.cursor(binary=True) if postgres else driver.cursor()
                try:
                    cursor.execute(sql, args)
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
            if rows:
                yield rows if postgres else _float_values(rows)
            if len(rows) < METRIC_PAGE:
                return
            last = rows[-1][:2]
            same = next((i for i, row in enumerate(reversed(rows)) if row[:2] != last), len(rows))
            read_there = read_there + same if same == len(rows) and last == at else same
            at = last
            sql = f"{select_points}{after}{order} LIMIT {METRIC_PAGE} OFFSET {read_there}"
            args = (*first, at[1]) if key else (*first, *at)

    def metric_arrays(
        self, run_id: str, key: str, *, x: str = "step", low: float | None = None, high: float | None = None
    ) -> tuple[Any, Any]:
        """One series of a run as two float64 numpy arrays ``(x, value)``, by step (points of the
        same step in the order they were stored); ``x`` is ``"step"`` or
        ``"timestamp"`` (epoch seconds), and ``low``/``high`` keep only the points whose ``x`` lies
        in that closed range.

        Made for charts of long series: one query of the two columns, read without a Python
        object per point. On PostgreSQL the database packs the series into two ``float8[]``
        arrays that numpy reads from their binary form (a binary ``COPY`` hands the driver one
        chunk per row: three times slower for a million points); on SQLite the cursor's rows are
        flattened straight into an array."""
        import numpy as np

        if x not in ("step", "timestamp"):
            raise ValueError(f"x must be 'step' or 'timestamp', not {x!r}")
        postgres = self.engine.dialect.driver == "psycopg"
        marker = "%s" if postgres or self.engine.dialect.paramstyle != "qmark" else "?"
        column = "CAST(step AS DOUBLE PRECISION)" if postgres and x == "step" else x
        where, args = f"run_id = {marker} AND key = {marker}", [run_id, key]
        for bound, op in ((low, ">="), (high, "<=")):
            if bound is not None:
                where += f" AND {x} {op} {marker}"
                args.append(bound)
        # Sorted by step and id, the order of the (run_id, key, step, id) index: nothing to sort.
        # "AS x": an output column named step would be what ORDER BY sorts, the cast value no
        # index holds.
        sql = f"SELECT {column} AS x, value FROM metrics WHERE {where} ORDER BY step, id"
        with self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            if postgres:
                # array_agg over a sorted subquery keeps its order (PostgreSQL's documented way;
                # array_agg(... ORDER BY step) would sort the rows again).
                packed = f"SELECT array_agg(x), array_agg(value) FROM ({sql}) AS points"
                with driver.cursor(binary=True) as cursor:
                    cursor.adapters.register_loader(_FLOAT8_ARRAY_OID, _float8_array_loader())
                    xs, values = cursor.execute(packed, args).fetchone()
                if xs is None:
                    return np.empty(0), np.empty(0)
                return xs, values
            cursor = driver.cursor()
            try:
                cursor.execute(sql, args)
                # numpy reads SQLite's NaN (the text "NaN") as the float it stands for.
                flat = np.fromiter(itertools.chain.from_iterable(cursor), dtype=np.float64)
            finally:
                cursor.close()
        pairs = flat.reshape(-1, 2)
        return pairs[:, 0].copy(), pairs[:, 1].copy()

    def put_artifacts(self, artifacts: list[Artifact]) -> None:
        """Insert or replace artifact rows (same run and path replaces)."""
        if not artifacts:
            return
        with self.session() as s:
            for artifact in artifacts:
                s.merge(artifact)

    def artifacts(self, run_id: str) -> list[Artifact]:
        with self.read_session() as s:
            return list(s.exec(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.path)))

    def put_source_bundle(self, bundle: SourceBundle) -> bool:
        """Keep ``bundle`` unless one of its digest is kept already; whether it was new."""
        from sqlalchemy.exc import IntegrityError

        if self.source_bundle(bundle.digest) is not None:
            return False
        try:
            with self.session() as s:
                s.add(bundle)
        except IntegrityError:  # another submission of the same code kept it first
            return False
        return True

    def source_bundle(self, digest: str) -> SourceBundle | None:
        """The kept bundle of ``digest``, or None."""
        with self.read_session() as s:
            return s.get(SourceBundle, digest)


def _upsertable_insert(conn: Any) -> Callable[..., Any]:
    """The ``insert`` of ``conn``'s dialect, which has ``on_conflict_do_*`` (SQLite and PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _write_rows(conn: Any, rows: Sequence[Any], *, run_record: tuple[str, dict[str, Any]] | None = None) -> Any:
    """Insert ``rows`` (model instances or :class:`~mlrt.store.models.Row`) in their order, and
    with ``run_record``, ``(run id, record)``, set that run's ``record``; the primary key the
    last row got (None: no rows).

    Every column is sent as the row holds it, as the ORM's flush does, except a primary
    key left None (the database numbers it) and another column left None that has no default
    (the database's NULL all the same): fewer parameters, and psycopg caches the conversion of
    a statement's text only up to 50 of them.

    On PostgreSQL this is one statement (:func:`_rows_statement`), so one round trip, and
    atomic on its own. SQLite has no ``INSERT`` in ``WITH``: there it is one statement per
    run of rows of one table (many rows batched), in the caller's transaction."""
    shapes, values = [], []
    for row in rows:
        table, given = row_values(row)
        for column in table.columns:
            if given[column.key] is None and (column.primary_key or column.default is column.server_default is None):
                del given[column.key]
        shapes.append((table.name, tuple(given)))
        values.append(given)
    if conn.dialect.name == "postgresql":
        binds = {f"r{index}_{key}": value for index, given in enumerate(values) for key, value in given.items()}
        if run_record is not None:
            binds.update(record_run_id=run_record[0], record=run_record[1])
        statement = _rows_statement(tuple(shapes), run_record is not None)
        if statement is None:
            return None
        result = conn.execute(statement, binds)
        return result.scalar() if rows else None
    if run_record is not None:
        conn.execute(update(Run).where(Run.id == run_record[0]).values(record=run_record[1]))
    last = None
    for (name, _), group in itertools.groupby(zip(shapes, values, strict=True), key=lambda pair: pair[0]):
        batch = [given for _, given in group]
        result = conn.execute(Run.metadata.tables[name].insert(), batch[0] if len(batch) == 1 else batch)
        last = result.inserted_primary_key[0] if len(batch) == 1 else None
    return last


def _run_record(run_id: str, record: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    return None if record is None else (run_id, record)


@functools.lru_cache(maxsize=256)
def _rows_statement(shapes: tuple[tuple[str, tuple[str, ...]], ...], sets_record: bool) -> Any:
    """PostgreSQL's one statement for :func:`_write_rows`: an ``INSERT`` per row, of the
    columns ``shapes`` names (``(table, columns)`` per row), with bound parameters
    ``r<row>_<column>``, and when ``sets_record`` an ``UPDATE`` of the run ``record_run_id``'s
    ``record``. All but the last ``INSERT`` are data-modifying CTEs of the last, which returns
    its primary key; None when there is nothing to write.

    The statement is built once per shape and, having one row per ``INSERT``, SQLAlchemy
    compiles it once too. Rows may refer to each other (a run to its job, a param to its
    run): a foreign key that is not deferrable "is checked immediately after every command"
    (PostgreSQL's CREATE TABLE reference), so after the whole statement, not after each CTE;
    and the statement is one transaction, so a failing row (a taken id) leaves nothing of the
    others (https://www.postgresql.org/docs/current/queries-with.html#QUERIES-WITH-MODIFYING)."""
    tables = Run.metadata.tables
    inserts = [
        tables[name]
        .insert()
        .values({key: bindparam(f"r{index}_{key}", type_=tables[name].c[key].type) for key in keys})
        for index, (name, keys) in enumerate(shapes)
    ]
    runs = Run.__table__
    update_record = (
        [
            update(runs)
            .where(runs.c.id == bindparam("record_run_id"))
            .values(record=bindparam("record", type_=runs.c.record.type))
        ]
        if sets_record
        else []
    )
    writes = [*update_record, *inserts]
    if not writes:
        return None
    last = writes[-1]
    if inserts:
        last = last.returning(*tables[shapes[-1][0]].primary_key.columns)
    return last.add_cte(*(write.cte(f"w{index}") for index, write in enumerate(writes[:-1])))


def _transitions(conn: Connection, changes: Sequence[tuple[str, RunState, str, dict[str, Any]]]) -> None:
    """Make ``changes``, ``(run id, to, reason, fields)`` each, in ``conn``'s transaction: each
    checked against the state machine from the state the run is in (or the change before it
    left it in), with its event; a run's ``started_at`` set when it first runs, ``ended_at``
    when it ends. Core statements: the runs read for update in one query, locked in one order
    (no deadlock between two passes), then one batched ``UPDATE`` per set of columns changed
    and one batched ``INSERT`` of the events."""
    runs = Run.__table__
    locked = select(runs.c.id, runs.c.state, runs.c.started_at).where(runs.c.id.in_(sorted({c[0] for c in changes})))
    now = utcnow()
    current = {
        row.id: (row.state, row.started_at) for row in conn.execute(locked.order_by(runs.c.id).with_for_update())
    }
    values: dict[str, dict[str, Any]] = {}  # per run: every column its changes set, the last value of each
    events = []
    for run_id, to, reason, fields in changes:
        if run_id not in current:
            raise NotFound(f"no run {run_id!r}")
        state, started_at = current[run_id]
        check_transition(RunState(state), to)
        changed = values.setdefault(run_id, {})
        changed.update(state=to.value, reason=reason, **fields)
        started_at = changed.get("started_at", started_at)
        if to is RunState.RUNNING and started_at is None:
            changed["started_at"] = started_at = now
        if to.is_terminal():
            changed["ended_at"] = now
        current[run_id] = (to.value, started_at)
        events.append({"run_id": run_id, "at": now, "from_state": state, "to_state": to.value, "reason": reason})
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for run_id, changed in values.items():
        by_columns.setdefault(tuple(sorted(changed)), []).append(
            {"run": run_id, **{f"new_{k}": v for k, v in changed.items()}}
        )
    for columns, rows in by_columns.items():
        statement = update(runs).where(runs.c.id == bindparam("run"))
        conn.execute(statement.values({column: bindparam(f"new_{column}") for column in columns}), rows)
    conn.execute(Event.__table__.insert(), events)
