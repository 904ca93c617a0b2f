"""What a run's page shows, read from the store: the timeline, worker log tails, metric
charts, report sections and the reproducibility record (no HTML here except the charts'
SVG and the reports' own sections)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from markupsafe import Markup

from mlrt.store import Store
from mlrt.store.models import Run

TAIL_BYTES = 64 << 10
"""How much of each worker's output the page shows (its end)."""
FAILURE_TAIL_LINES = 40
"""Lines of the log shown next to a failure's reason."""


@dataclasses.dataclass(frozen=True)
class Moment:
    """One entry of a run's timeline."""

    at: datetime
    text: str
    kind: str  # "event" | "attempt"


@dataclasses.dataclass(frozen=True)
class WorkerTail:
    """The end of one worker's output: ``text`` from output position ``start`` (earlier output left out)."""

    attempt: int
    rank: int
    text: str
    start: int

    def lines(self, count: int) -> list[str]:
        return self.text.splitlines()[-count:]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def timeline(store: Store, run: Run) -> list[Moment]:
    """Every state change (an event row with its reason) and every attempt's start and end, in time order."""
    moments = [
        Moment(_utc(e.at), _event_text(e.from_state, e.to_state, e.reason), "event") for e in store.events(run.id)
    ]
    for attempt in store.attempts(run.id):
        moments.append(
            Moment(_utc(attempt.started_at), f"attempt {attempt.number} started on {attempt.backend}", "attempt")
        )
        if attempt.ended_at is not None:
            code = "" if attempt.exit_code is None else f", exit code {attempt.exit_code}"
            text = f"attempt {attempt.number} ended {attempt.state}{code}: {attempt.reason}"
            moments.append(Moment(_utc(attempt.ended_at), text, "attempt"))
    return sorted(moments, key=lambda m: m.at)


def _event_text(before: str | None, after: str | None, reason: str) -> str:
    if after is None:
        return reason
    return (f"{before} → {after}" if before else after) + (f": {reason}" if reason else "")


def worker_tails(store: Store, run_id: str, size: int = TAIL_BYTES) -> list[WorkerTail]:
    """The last ``size`` bytes of each worker's output in the latest attempt, SDK records left
    out: from the log file on this machine, else from the database (:mod:`mlrt.logship`)."""
    from mlrt.logfile import output_size, read_output
    from mlrt.logscan import is_sdk_record
    from mlrt.logship import read_log, stored_end

    attempt = store.latest_attempt(run_id)
    if attempt is None:
        return []
    tails = []
    for worker in attempt.request.get("workers", []):
        rank, path = worker["rank"], Path(worker.get("log_path", ""))
        if path.name and path.exists():
            start = max(0, output_size(path) - size)
            part = read_output(path, start, size)
        else:
            start = max(0, stored_end(store, run_id, attempt.number, rank) - size)
            part = read_log(store, run_id, attempt.number, rank, start, size)
        text = part.data.decode("utf-8", "replace")
        if part.start > 0 and "\n" in text:  # begin at a whole line
            text = text.split("\n", 1)[1]
        kept = "\n".join(line for line in text.splitlines() if not is_sdk_record(line))
        tails.append(WorkerTail(attempt.number, rank, kept, part.start))
    return tails


def metric_charts(store: Store, run_id: str, summary: list[dict[str, Any]], axis: str) -> list[tuple[str, int, Markup]]:
    """``(key, points, svg)`` for every metric key of the run with more than one point (a single
    value is a row of the summary table, not a chart): one chart per key on the ``step`` or
    ``time`` axis, each thinned on the server; a chart zooms through :mod:`mlrt.ui.chart_pages`'
    route (its ``data-src``). ``summary``: :meth:`mlrt.store.Store.metric_summary` of the run."""
    from urllib.parse import quote

    from mlrt.ui.auth import PREFIX
    from mlrt.ui.chart_pages import ChartRequest, metric_series
    from mlrt.ui.charts import line_chart

    request = ChartRequest(axis=axis)
    found = []
    for row in summary:
        key = row["key"]
        if row["points"] < 2:
            continue
        src = f"{PREFIX}/runs/{quote(run_id, safe='')}/chart.svg?key={quote(key, safe='')}&axis={axis}"
        svg = line_chart(
            [metric_series(store, run_id, key, key, request)],
            axis=request.x_axis(**{"data-metric": key}),
            title=key,
            y_label=key,
            points=request.points,
            src=src,
        )
        found.append((key, row["points"], svg))
    return found


def report_sections(store: Store, run: Run) -> list[Markup]:
    """The run's built error-analysis reports, one HTML section each, as the report page has them.
    The sections come from report plugins, which escape the values they show."""
    from mlrt import report_runner
    from mlrt.report_page import sections

    return [Markup(html) for html in sections(report_runner.load_results(store, run.id))]


def reproducibility(store: Store, run: Run) -> dict[str, Any]:
    """The run's reproducibility record and its job's spec as submitted, secrets hidden."""
    from mlrt.service.views import job_view

    job = job_view(store.get_job(run.job_id))
    return {"record": run.record, "spec_submitted": job["spec_submitted"]}
