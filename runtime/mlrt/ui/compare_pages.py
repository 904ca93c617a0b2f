"""The compare page: 2 to 10 runs side by side.

``/ui/compare?run=A&run=B`` (or ``?runs=A,B,C``; ``&axis=time`` for time on the charts' x-axis)
shows the runs' params in one table, a row of class ``differs`` where they are not all the same
(a param a run lacks counts as different); their latest metrics; one chart per metric key with
every run's series overlaid (``/ui/compare/chart.svg?run=A&run=B&key=K&axis=&x0=&x1=`` draws it
again zoomed); and ``mlrt report diff`` of each run against the first one
(:func:`mlrt.report_runner.metric_diff` and :func:`mlrt.report_runner.diff`, the CLI's code).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from mlrt import report_runner
from mlrt.records import RunRecord
from mlrt.store.models import Run
from mlrt.ui.app import render
from mlrt.ui.auth import PREFIX, Context, UiContext, Viewer, visible_run
from mlrt.ui.chart_pages import ChartRequest, chart_request, metric_series, svg_response
from mlrt.ui.charts import line_chart

router = APIRouter()

MIN_RUNS, MAX_RUNS = 2, 10


def run_ids(request: Request) -> list[str]:
    """The runs asked for, in order, each once: every ``run`` and the comma-separated ``runs``."""
    asked = list(request.query_params.getlist("run"))
    for value in request.query_params.getlist("runs"):
        asked += value.split(",")
    ids = list(dict.fromkeys(r.strip() for r in asked if r.strip()))
    if not MIN_RUNS <= len(ids) <= MAX_RUNS:
        raise HTTPException(
            400, f"run: compare takes {MIN_RUNS} to {MAX_RUNS} runs, {len(ids)} given (run=ID&run=ID, or runs=A,B)"
        )
    return ids


def visible_runs(ctx: UiContext, who: Any, ids: list[str]) -> list[Run]:
    return [visible_run(ctx, who, run_id) for run_id in ids]


def series_labels(ctx: UiContext, runs: list[Run]) -> dict[str, str]:
    """Each run's name on the charts: its id and its job's name."""
    return {run.id: f"{run.id} ({ctx.store.get_job(run.job_id).name})" for run in runs}


@dataclasses.dataclass(frozen=True)
class ParamRow:
    key: str
    values: list[str | None]
    differs: bool


def param_rows(records: list[RunRecord]) -> list[ParamRow]:
    """One row per param any run has, by name; ``differs`` when the runs' values are not all equal."""
    rows = []
    for key in sorted({k for r in records for k in r.params}):
        values = [r.params.get(key) for r in records]
        rows.append(ParamRow(key, values, len(set(values)) > 1))
    return rows


def chart_src(runs: list[Run], key: str, chart: ChartRequest) -> str:
    pairs = [("run", r.id) for r in runs] + [("key", key), ("axis", chart.axis), ("points", str(chart.points))]
    return f"{PREFIX}/compare/chart.svg?{urlencode(pairs)}"


def overlay(
    ctx: UiContext, runs: list[Run], key: str, chart: ChartRequest, labels: dict[str, str], *, curves_only: bool = False
) -> Markup | None:
    """The chart of metric ``key`` with one series per run (runs without the key left out).
    With ``curves_only``, None when no run has more than one point of it (the page's metrics
    table already holds single values)."""
    series = [s for s in (metric_series(ctx.store, run.id, key, labels[run.id], chart) for run in runs) if s.total]
    if curves_only and all((s.total or 0) <= 1 for s in series):
        return None
    return line_chart(
        series,
        axis=chart.x_axis(**{"data-metric": key}),
        title=key,
        y_label=key,
        x_range=(chart.x0, chart.x1),
        points=chart.points,
        src=chart_src(runs, key, chart),
        width=560,
        height=280,
    )


def report_diffs(ctx: UiContext, records: list[RunRecord]) -> list[dict[str, Any]]:
    """``mlrt report diff FIRST RUN`` for every run after the first: the run metrics' changes and
    the report rows (worse first), or why there are no report rows."""
    first = records[0]
    before = report_runner.load_results(ctx.store, first.id)
    diffs = []
    for record in records[1:]:
        after = report_runner.load_results(ctx.store, record.id)
        missing = [r.id for r, results in ((first, before), (record, after)) if not results]
        rows = [] if missing else sorted(report_runner.diff(before, after), key=lambda r: -r["regression"])
        diffs.append(
            {
                "before": first.id,
                "after": record.id,
                "metrics": report_runner.metric_diff(first.metrics, record.metrics),
                "rows": rows,
                "missing": missing,
            }
        )
    return diffs


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, ctx: Context, who: Viewer) -> Response:
    """Runs side by side: params (differences highlighted), metrics, overlaid charts, report diff."""
    runs = visible_runs(ctx, who, run_ids(request))
    chart = chart_request(request)
    records = RunRecord.load_many(ctx.store, runs)
    jobs = {run.id: ctx.store.get_job(run.job_id) for run in runs}
    labels = series_labels(ctx, runs)
    metric_keys = sorted({k for r in records for k in r.metrics})
    here = [("run", r.id) for r in runs]
    return render(
        request,
        "compare.html",
        {
            "viewer": who,
            "records": records,
            "jobs": jobs,
            "params": param_rows(records),
            "metric_keys": metric_keys,
            "charts": [
                (k, svg) for k in metric_keys if (svg := overlay(ctx, runs, k, chart, labels, curves_only=True))
            ],
            "diffs": report_diffs(ctx, records),
            "axis": chart.axis,
            "axis_links": {a: f"{PREFIX}/compare?{urlencode([*here, ('axis', a)])}" for a in ("step", "time")},
            "run_link": lambda run_id: f"{PREFIX}/runs/{quote(run_id, safe='')}",
        },
    )


@router.get("/compare/chart.svg")
def compare_chart(request: Request, ctx: Context, who: Viewer) -> Response:
    """One metric (``key``) of several runs overlaid, zoomed to ``x0``..``x1`` when given."""
    runs = visible_runs(ctx, who, run_ids(request))
    key = request.query_params.get("key", "")
    if not key:
        raise HTTPException(400, "key: name the metric to draw (key=validation_loss)")
    return svg_response(overlay(ctx, runs, key, chart_request(request), series_labels(ctx, runs)))
