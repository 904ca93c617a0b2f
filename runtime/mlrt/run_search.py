"""Finding runs: filter by state, job label, name and metric condition, sort by any metric.

One query language for ``mlrt runs list``, ``GET /api/v1/runs`` and the web UI::

    mlrt runs list --label team=vision --state SUCCEEDED \\
        --where 'validation_accuracy > 0.9' --sort -validation_accuracy --limit 20

A condition or a sort on a metric reads each run's *last* value of that metric
(the point with the highest step; the newest point among equal steps), the value
``mlrt runs show`` prints. Runs that never logged a metric fail every condition
on it and sort after the runs that did, in either direction.

Everything is one SQL query for the page plus one for the total, on SQLite and
PostgreSQL alike: a metric is a correlated lookup on the ``(run_id, key, step)``
index, so a query stays fast with tens of thousands of runs.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, literal, or_, select
from sqlmodel import col

from mlrt.store.models import Job, MetricSummary, Run, utcnow
from mlrt.units import shown

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.sql.elements import ColumnElement

    from mlrt.store import Store

OPERATORS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
SORT_COLUMNS = ("created_at", "duration", "state", "name")
MAX_LIMIT = 1000
MAX_OFFSET = 10**9
MAX_CONDITIONS = 20
MAX_TEXT = 256
"""Bounds of a search a remote user sends: the page, how many conditions, a name's or a label's length
(label keys and values are further kept free of quotes, backslashes and control characters, which a
JSON path could not hold)."""
_LABEL_TEXT = re.compile(r'^[^"\\\x00-\x1f]*$')
_CONDITION = re.compile(r"^\s*([A-Za-z0-9_.:/-]{1,250})\s*(<=|>=|==|!=|<|>|=)\s*(\S+)\s*$")
_METRIC_KEY = re.compile(r"^[A-Za-z0-9_.:/-]{1,250}$")


@dataclasses.dataclass(frozen=True)
class Condition:
    """``key op value`` on a run's last value of metric ``key`` (``op``: one of :data:`OPERATORS`)."""

    key: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.value:g}"


@dataclasses.dataclass(frozen=True)
class RunQuery:
    """Which runs, in which order, which page.

    ``labels``: job labels that must all match (``(key, value)`` pairs);
    ``name``: a case-insensitive substring of the run id or the job name;
    ``sort``: ``created_at``, ``duration``, ``state``, ``name`` or a metric key,
    ``-`` first for descending; ``job_id``: the runs of one job, its trials
    included; ``top_level``: leave tuning trials out."""

    states: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    where: tuple[Condition, ...] = ()
    sort: str = "-created_at"
    limit: int = 50
    offset: int = 0
    job_id: str | None = None
    project: str | None = None
    top_level: bool = False

    def __post_init__(self) -> None:
        for problem in self.problems():
            raise ValueError(problem)

    def problems(self) -> list[str]:
        """What is wrong with this query, one line each naming the field and the fix."""
        found = []
        if not 1 <= self.limit <= MAX_LIMIT:
            found.append(f"limit: {self.limit} is out of range: use 1 to {MAX_LIMIT}")
        if not 0 <= self.offset <= MAX_OFFSET:
            found.append(f"offset: {self.offset} is out of range: use 0 to {MAX_OFFSET}")
        if len(self.labels) > MAX_CONDITIONS or len(self.where) > MAX_CONDITIONS:
            found.append(f"label/where: at most {MAX_CONDITIONS} labels and {MAX_CONDITIONS} conditions")
        for key, value in self.labels:
            if not (0 < len(key) <= MAX_TEXT and len(value) <= MAX_TEXT and _LABEL_TEXT.match(key + value)):
                found.append(f"label: {shown(key)}: keys and values of at most {MAX_TEXT} characters, no quotes")
        if self.name is not None and len(self.name) > MAX_TEXT:
            found.append(f"name: {len(self.name)} characters: use at most {MAX_TEXT}")
        key = self.sort.removeprefix("-")
        if key not in SORT_COLUMNS and not _METRIC_KEY.match(key):
            found.append(
                f"sort: {self.sort!r} is not a column or metric key: use one of {', '.join(SORT_COLUMNS)} or a metric"
            )
        return found


@dataclasses.dataclass
class RunPage:
    """One page of matching runs: the rows in order, how many match in all, the last value
    of every metric and the params of each run on the page, and each run's job row."""

    runs: list[Run]
    total: int
    metrics: dict[str, dict[str, float]]
    jobs: dict[str, Job]
    params: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The page as JSON-ready data (the API's answer to a search)."""
        return {
            "runs": [run.model_dump(mode="json") for run in self.runs],
            "total": self.total,
            "metrics": self.metrics,
            "params": self.params,
            "jobs": {
                job_id: job.model_dump(mode="json", exclude={"spec_resolved"}) for job_id, job in self.jobs.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPage:
        """The inverse of :meth:`to_dict` (the CLI's remote mode)."""
        jobs = {job_id: Job.model_validate({**job, "spec_resolved": {}}) for job_id, job in data["jobs"].items()}
        runs = [Run.model_validate(r) for r in data["runs"]]
        return cls(runs, data["total"], data["metrics"], jobs, data.get("params", {}))


def parse_condition(text: str) -> Condition:
    """``"validation_accuracy > 0.9"`` as a :class:`Condition` (``=`` reads as ``==``);
    ``ValueError`` with one line saying what is expected otherwise."""
    match = _CONDITION.match(text)
    if not match:
        raise ValueError(
            f"where: {shown(text)} is not 'METRIC OP NUMBER' (OP one of {' '.join(OPERATORS)}), e.g. 'validation_accuracy > 0.9'"
        )
    key, op, value = match.groups()
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"where: {shown(value)} in {shown(text)} is not a number") from None
    return Condition(key, "==" if op == "=" else op, number)


def parse_label(text: str) -> tuple[str, str]:
    """``"team=vision"`` as ``("team", "vision")``; ``ValueError`` otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"label: {shown(text)} is not KEY=VALUE, e.g. team=vision")
    return key.strip(), value


def query_from_text(
    *,
    states: Sequence[str] = (),
    labels: Sequence[str] = (),
    name: str | None = None,
    where: Sequence[str] = (),
    sort: str = "-created_at",
    limit: int = 50,
    offset: int = 0,
    job_id: str | None = None,
    project: str | None = None,
    top_level: bool = False,
) -> tuple[RunQuery | None, list[str]]:
    """The query a user typed (CLI options, URL parameters: ``KEY=VALUE`` labels, ``METRIC OP
    NUMBER`` conditions, state names in any case): the query, or None and one line per problem."""
    from mlrt.states import RunState

    problems: list[str] = []

    def parsed(parse: Any, texts: Sequence[str]) -> tuple[Any, ...]:
        found = []
        for text in texts:
            try:
                found.append(parse(text))
            except ValueError as exc:
                problems.append(str(exc))
        return tuple(found)

    known = [state.value for state in RunState]
    upper = tuple(state.upper() for state in states)
    problems += [f"state: {s!r} is not one of {', '.join(known)}" for s in upper if s not in known]
    conditions, pairs = parsed(parse_condition, where), parsed(parse_label, labels)
    fields = dict(states=upper, labels=pairs, name=name or None, where=conditions, sort=sort, limit=limit)
    fields.update(offset=offset, job_id=job_id, project=project, top_level=top_level)
    if problems:
        return None, problems
    try:
        return RunQuery(**fields), []
    except ValueError as exc:
        return None, [str(exc)]


def find_runs(store: Store, query: RunQuery) -> RunPage:
    """The page of runs in ``store`` that ``query`` asks for (see the module's docstring)."""
    filters = _filters(query)
    sort_key = query.sort.removeprefix("-")
    descending = query.sort.startswith("-")
    order = _sort_column(sort_key, store.engine.dialect.name)
    order = order.desc() if descending else order.asc()
    if sort_key == "created_at":  # never NULL: the plain order reads the index ix_runs_created_at_id
        ordering = [order, col(Run.id).desc() if descending else col(Run.id).asc()]
    else:
        ordering = [order.nulls_last(), col(Run.created_at).desc(), col(Run.id).desc()]
    page = (
        select(Run, Job)
        .join(Job, Job.id == Run.job_id)
        .where(*filters)
        .order_by(*ordering)
        .limit(query.limit)
        .offset(query.offset)
    )
    counted = select(func.count()).select_from(Run).join(Job, Job.id == Run.job_id).where(*filters)
    with store.read_session() as s:
        rows = [tuple(row) for row in s.execute(page)]
        total = s.execute(counted).scalar_one()
        for run, job in rows:
            s.expunge(run)
            s.expunge(job)
    runs = [run for run, _job in rows]
    jobs = {job.id: job for _run, job in rows}
    ids = [run.id for run in runs]
    return RunPage(runs, int(total), store.latest_metrics_of(ids), jobs, store.params_of(ids))


def _last_value(key: str) -> ColumnElement[Any]:
    """The last value of metric ``key`` of the run in the outer query (NULL when none): one
    probe of the key's summary row."""
    return (
        select(MetricSummary.last_value)
        .where(MetricSummary.run_id == Run.id, MetricSummary.key == key)
        .correlate(Run)
        .scalar_subquery()
    )


def _filters(query: RunQuery) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if query.states:
        filters.append(col(Run.state).in_([s.upper() for s in query.states]))
    if query.project is not None:
        filters.append(Job.project == query.project)
    if query.job_id:
        filters.append(or_(Run.job_id == query.job_id, Run.parent_id == query.job_id))
    if query.top_level:
        filters.append(col(Run.parent_id).is_(None))
    for key, value in query.labels:
        filters.append(col(Job.labels)[key].as_string() == value)
    if query.name:
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", query.name.lower()) + "%"
        filters.append(
            or_(func.lower(Run.id).like(pattern, escape="\\"), func.lower(Job.name).like(pattern, escape="\\"))
        )
    for condition in query.where:
        filters.append(OPERATORS[condition.op](_last_value(condition.key), literal(condition.value)))
    return filters


def _sort_column(key: str, dialect: str) -> ColumnElement[Any]:
    if key == "created_at":
        return col(Run.created_at)
    if key == "state":
        return col(Run.state)
    if key == "name":
        return col(Job.name)
    if key == "duration":
        end = func.coalesce(Run.ended_at, literal(utcnow()))
        if dialect == "postgresql":
            return func.extract("epoch", end - Run.started_at)
        return func.julianday(end) - func.julianday(Run.started_at)
    return _last_value(key)
