"""The tuning job page: a search's trials, its best trial, and pictures of where it looked.

``/ui/tuning/{run_id}`` (the tuning job's own run) shows the trials table, best first (the
best trial, or the Pareto front with several objectives, then the other scored trials from
best to worst, then the rest by trial number), with each trial's state, parameters and
objective values; pruned trials are marked. Under it the objective by trial number (the
best so far as a staircase) and a parallel-coordinates view of the parameters, colored by
the (first) objective. The result is :func:`mlrt.tuning_results.search_result`, the rule
``mlrt status`` and ``mlrt runs compare JOB`` use, so all three name the same best trial.

``/ui/tuning/{run_id}/trials`` answers the table alone; the page refreshes it every few
seconds while the search runs (``data-live``), and its answer says ``X-Mlrt-Live: done``
once the tuning run has ended.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from mlrt.states import RunState
from mlrt.store.models import Run
from mlrt.tuning_results import SearchResult, search_result
from mlrt.tuning_spec import applicable
from mlrt.ui.app import render
from mlrt.ui.auth import PREFIX, Context, UiContext, Viewer, visible_run
from mlrt.ui.charts import Axis, Series, Trial, line_chart, parallel_coordinates

router = APIRouter()


@dataclasses.dataclass(frozen=True)
class TrialRow:
    """One line of the trials table; ``params`` are those that applied to the trial (a parameter
    limited to other algorithms is left out, as ``best_params`` leaves it out)."""

    run: Run
    params: dict[str, Any]
    values: tuple[float, ...] | None
    winner: bool

    @property
    def pruned(self) -> bool:
        return self.run.state == RunState.PRUNED.value

    def shown(self, name: str) -> str:
        """A parameter's value as the table shows it: floats to 6 significant digits."""
        value = self.params[name]
        return f"{value:.6g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True)
class TuningView:
    """What the page shows of one tuning job."""

    run: Run
    spec: dict[str, Any]
    result: SearchResult
    params: list[str]
    rows: list[TrialRow]

    @property
    def done(self) -> bool:
        return RunState(self.run.state).is_terminal()


def tuning_view(ctx: UiContext, run: Run) -> TuningView:
    """The search of tuning run ``run`` (404 when ``run`` is not a tuning job's run)."""
    job = ctx.store.get_job(run.job_id)
    if job.kind != "TuningJob" or run.parent_id is not None:
        raise HTTPException(404, f"run {run.id!r} is not a tuning job (open /ui/runs/{run.id})")
    spec = job.spec_resolved["spec"]
    result = search_result(ctx.store, run, spec)
    winners = {t.id for t in result.winners()}
    first = result.objectives[0]

    def rank(t: Run) -> tuple[int, float, int]:
        value = result.values.get(t.id)
        if t.id in winners:
            return (0, 0.0, t.trial or 0)
        if value is not None and t.state == RunState.SUCCEEDED.value:
            return (1, -value[0] if first.goal == "maximize" else value[0], t.trial or 0)
        return (2, 0.0, t.trial or 0)

    rows = [
        TrialRow(
            t, applicable(spec, dict(t.record.get("trial_params") or {})), result.values.get(t.id), t.id in winners
        )
        for t in sorted(result.trials, key=rank)
    ]
    return TuningView(run, spec, result, list(spec.get("parameters", {})), rows)


def objective_chart(view: TuningView) -> Markup:
    """The first objective by trial number: finished trials as points, pruned ones grey, and the
    best so far among SUCCEEDED trials as a staircase."""
    objective = view.result.objectives[0]
    scored = sorted(
        (
            (t.trial or 0, view.result.values[t.id][0], t.state)
            for t in view.result.trials
            if t.id in view.result.values
        ),
        key=lambda item: item[0],
    )

    def points(label: str, keep, color: str | None = None) -> Series:
        chosen = [(n, v) for n, v, state in scored if keep(state)]
        x = np.array([n for n, _ in chosen], dtype=float)
        return Series(label, x, np.array([v for _, v in chosen], dtype=float), style="points", color=color)

    series = [points("finished", lambda s: s != RunState.PRUNED.value)]
    if any(state == RunState.PRUNED.value for *_, state in scored):
        series.append(points("pruned", lambda s: s == RunState.PRUNED.value, "#999999"))
    succeeded = [(n, v) for n, v, state in scored if state == RunState.SUCCEEDED.value]
    if succeeded:
        running = np.array([v for _, v in succeeded], dtype=float)
        best = np.maximum.accumulate(running) if objective.goal == "maximize" else np.minimum.accumulate(running)
        series.append(Series("best so far", np.array([n for n, _ in succeeded], dtype=float), best, style="step"))
    return line_chart(
        series,
        axis=Axis("trial", "trial"),
        title=f"{objective.metric} by trial",
        y_label=objective.metric,
        height=280,
    )


def parallel_view(view: TuningView) -> Markup:
    """Parallel coordinates of the trials' parameters and objectives (the first colors the lines)."""
    objectives = view.result.objectives
    log = [name for name, p in view.spec.get("parameters", {}).items() if p.get("scale") == "log"]
    trials = []
    for row in view.rows:
        params: dict[str, Any] = dict(row.params)
        if row.values is not None:
            params.update({o.metric: v for o, v in zip(objectives[1:], row.values[1:], strict=True)})
        trials.append(
            Trial(
                label=f"trial {row.run.trial} ({row.run.id})",
                params=params,
                objective=row.values[0] if row.values is not None else None,
                pruned=row.pruned,
                href=f"{PREFIX}/runs/{quote(row.run.id, safe='')}",
            )
        )
    return parallel_coordinates(
        trials,
        view.params + [o.metric for o in objectives[1:]],
        objective=objectives[0].metric,
        goal=objectives[0].goal,
        log_params=log,
    )


def _table_context(view: TuningView) -> dict[str, Any]:
    return {"view": view, "run_link": lambda run_id: f"{PREFIX}/runs/{quote(run_id, safe='')}"}


@router.get("/tuning/{run_id}", response_class=HTMLResponse)
def tuning_page(run_id: str, request: Request, ctx: Context, who: Viewer) -> Response:
    """A tuning job: its trials best first, the objective by trial, parallel coordinates."""
    view = tuning_view(ctx, visible_run(ctx, who, run_id))
    return render(
        request,
        "tuning.html",
        {
            "viewer": who,
            "job": ctx.store.get_job(view.run.job_id),
            "objective_chart": objective_chart(view) if view.result.values else None,
            "parallel": parallel_view(view) if view.rows else None,
            **_table_context(view),
        },
    )


@router.get("/tuning/{run_id}/trials", response_class=HTMLResponse)
def trials_fragment(run_id: str, request: Request, ctx: Context, who: Viewer) -> Response:
    """The trials table alone (the page's live part)."""
    view = tuning_view(ctx, visible_run(ctx, who, run_id))
    response = render(request, "_tuning_trials.html", _table_context(view))
    if view.done:
        response.headers["X-Mlrt-Live"] = "done"
    return response
