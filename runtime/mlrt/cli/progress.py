"""What `mlrt submit` shows while it follows a run: a live status line on a terminal,
plain progress lines (state changes, finished trials, new metrics) everywhere else."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from mlrt.cli import App
from mlrt.cli.render import console, number, seconds, styled_state

Drive = Callable[[Callable[[], None] | None], None]
"""Runs the job to its end, calling the given function (if any) between passes."""

METRICS_EVERY = 5.0
"""Seconds between two metric lines of a run in plain progress output."""


def tuning_summary(app: App, run_id: str) -> dict[str, Any] | None:
    """Trial counts by state (trials a resumed search took over included) and the best objective
    so far, or the Pareto front of a multi-objective search, for a tuning run (else None); the
    result by :mod:`mlrt.tuning_results`' rule."""
    run = app.store.get_run(run_id)
    job = app.store.get_job(run.job_id)
    if job.kind != "TuningJob":
        return None
    from mlrt.tuning_results import search_result

    spec = job.spec_resolved["spec"]
    result = search_result(app.store, run, spec)
    counts: dict[str, int] = {}
    for trial in result.trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    best = result.best
    return {
        "trials": counts,
        "objective": spec["objective"],
        "objectives": [{"metric": o.metric, "goal": o.goal} for o in result.objectives],
        "best": None if best is None else {"value": best[1], "trial": best[0].trial},
        "pareto": [{"trial": t.trial, "values": list(result.values[t.id])} for t in result.front],
    }


def tuning_line(summary: dict[str, Any]) -> str:
    """``trials: 3 succeeded, 1 running; best val_loss=0.31 (trial 2)``."""
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(summary["trials"].items())) or "no trials yet"
    best = summary["best"]
    metric = summary["objective"]["metric"]
    if len(summary["objectives"]) > 1:
        front = ", ".join(str(p["trial"]) for p in summary["pareto"])
        return f"trials: {counts}" + (f"; Pareto front: trials {front}" if front else "")
    return f"trials: {counts}" + (f"; best {metric}={number(best['value'])} (trial {best['trial']})" if best else "")


def _metrics_text(metrics: dict[str, float]) -> str:
    """Up to four metrics, validation ones first."""
    shown = sorted(metrics.items(), key=lambda item: (not item[0].startswith(("validation_", "val_")), item[0]))
    return "  ".join(f"{k}={number(v)}" for k, v in shown[:4])


def live_line(app: App, run_id: str, started: float):
    """The live status line: run, state, attempt, time so far, and the latest metrics or trials."""
    from rich.text import Text

    run = app.store.get_run(run_id)
    summary = tuning_summary(app, run_id)
    elapsed = seconds(time.monotonic() - started)
    if summary is not None:
        return Text.assemble(f"{run_id} ", styled_state(run.state), f"  {elapsed}  {tuning_line(summary)}")
    attempt = f" attempt {run.attempts}/{run.max_attempts}" if run.max_attempts > 1 else ""
    shown = _metrics_text(app.store.latest_metrics(run_id))
    return Text.assemble(f"{run_id} ", styled_state(run.state), f"{attempt}  {elapsed}  {shown}")


class ProgressLines:
    """Plain progress for pipes and logs: one line per state change of the run (with its
    attempt and reason), one per finished trial of a tuning run (its objective or why it
    ended, and the best so far), and the latest metrics of a training run when they change
    (at most every :data:`METRICS_EVERY` seconds)."""

    def __init__(self, app: App, run_id: str):
        self.app = app
        self.run_id = run_id
        self.state: tuple[str, int] | None = None
        self.finished_trials: set[str] = set()
        self.metrics: dict[str, float] = {}
        self.metrics_at = 0.0

    def _say(self, text: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {text}")

    def update(self) -> None:
        """Print whatever changed since the last call."""
        run = self.app.store.get_run(self.run_id)
        tuning = self.app.store.get_job(run.job_id).kind == "TuningJob"
        if tuning:
            self._trials()
        if (run.state, run.attempts) != self.state:
            self.state = (run.state, run.attempts)
            attempt = f" (attempt {run.attempts}/{run.max_attempts})" if run.max_attempts > 1 else ""
            self._say(f"{self.run_id} {run.state}{attempt}: {run.reason}")
        if tuning:
            return
        if time.monotonic() - self.metrics_at >= METRICS_EVERY:
            metrics = self.app.store.latest_metrics(self.run_id)
            if metrics and metrics != self.metrics:
                self.metrics, self.metrics_at = metrics, time.monotonic()
                self._say(f"{self.run_id} {_metrics_text(metrics)}")

    def _trials(self) -> None:
        from mlrt.states import RunState

        ended = [
            t
            for t in self.app.store.trials(self.run_id)
            if RunState(t.state).is_terminal() and t.id not in self.finished_trials
        ]
        if not ended:
            return
        summary = tuning_summary(self.app, self.run_id)
        metric = summary["objective"]["metric"]
        values = self.app.store.last_values([t.id for t in ended], metric)
        for trial in sorted(ended, key=lambda t: t.trial or 0):
            self.finished_trials.add(trial.id)
            result = f"{metric}={number(values[trial.id])}" if trial.id in values else "no objective"
            why = "" if trial.state == "SUCCEEDED" else f" ({trial.reason})"
            self._say(f"trial {trial.trial} {trial.id} {trial.state}{why}: {result}")
        self._say(tuning_line(summary))


def follow(app: App, run_id: str, drive: Drive, quiet: bool) -> None:
    """Drive the run to its end while showing progress: nothing when ``quiet``, a live line
    on a terminal, :class:`ProgressLines` when stdout is a pipe or a file."""
    if quiet:
        drive(None)
        return
    out = console()
    if not out.is_terminal:
        lines = ProgressLines(app, run_id)
        last = 0.0

        def report() -> None:
            nonlocal last
            if time.monotonic() - last >= 0.5:
                lines.update()
                last = time.monotonic()

        drive(report)
        lines.update()
        return
    from rich.live import Live
    from rich.spinner import Spinner

    started = time.monotonic()
    spinner = Spinner("dots", text=live_line(app, run_id, started))
    last = 0.0
    with Live(spinner, refresh_per_second=8, transient=True, console=out) as live:

        def tick() -> None:
            nonlocal last
            if time.monotonic() - last >= 0.25:
                spinner.update(text=live_line(app, run_id, started))
                live.refresh()
                last = time.monotonic()

        drive(tick)
