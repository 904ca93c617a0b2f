"""``mlrt report``: build and show a run's error-analysis reports, or diff two runs'."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from mlrt.cli import EXIT_BAD_INPUT, App
from mlrt.cli.render import console, echo_json, number, seconds, table

pass_app = click.make_pass_decorator(App)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(EXIT_BAD_INPUT)


@click.command("report")
@click.argument("runs", nargs=-1, required=True, metavar="RUN | diff RUN_A RUN_B")
@click.option("--only", "only", multiple=True, metavar="NAME", help="Only this report (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), help="Also write the HTML page to FILE.")
@click.option(
    "--regressions",
    is_flag=True,
    help="diff: only the numbers that got worse (run metrics, and slice, class and group rows); "
    "the exit code stays 0 either way.",
)
@pass_app
def report(
    app: App, runs: tuple[str, ...], only: tuple[str, ...], as_json: bool, html_file: str | None, regressions: bool
) -> None:
    """Error-analysis reports of RUN (built now), or `mlrt report diff RUN_A RUN_B`.

    Without --only it builds the reports the job lists in spec.reports (and
    those its gates read), or every registered report when it lists none.
    The results are stored with the run (output/reports/*.json, report.html).
    Building can take a while on a large run: a terminal shows what is being built.

    `mlrt report diff RUN_A RUN_B` lines up both runs' metrics and every slice,
    class and group their reports compare, worst first; reports must exist
    (exit 2 otherwise).
    """
    if runs[0] == "diff":
        if len(runs) != 3:
            _fail("usage: mlrt report diff RUN_A RUN_B")
        _diff(app, runs[1], runs[2], as_json, regressions)
        return
    if len(runs) != 1:
        _fail("give one run (or: mlrt report diff RUN_A RUN_B)")
    _report(app, runs[0], list(only), as_json, html_file)


@contextlib.contextmanager
def _building(what: str) -> Iterator[None]:
    """Say what is being built while it is: a spinner with the time so far on a terminal,
    one line on stderr elsewhere (stdout stays the results)."""
    from rich.text import Text

    out = console()
    if not out.is_terminal:
        click.echo(f"{what} ...", err=True)
        yield
        return
    started = time.monotonic()
    with out.status(Text(f"{what} ...")) as status:
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(1.0):
                status.update(Text(f"{what} ... {seconds(time.monotonic() - started)}"))

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()


def _report(app: App, run_id: str, only: list[str], as_json: bool, html_file: str | None) -> None:
    from rich.text import Text

    from mlrt import plugins, report_runner

    run = app.store.get_run(run_id)
    job = app.store.get_job(run.job_id)
    spec = job.spec_resolved["spec"]
    if job.kind == "TuningJob":
        _fail(f"{run_id} is a tuning job; report on one of its trials (mlrt runs compare {run_id})")
    if app.remote is not None:
        with _building(f"building the reports of {run_id} on {app.remote.server}"):
            results = app.remote.build_reports(run_id, only)
        if html_file:
            Path(html_file).write_text(app.remote.report_page(run_id) or "")
    else:
        names = only or report_runner.needed_reports(spec) or sorted(plugins.reports())
        try:
            with _building(f"building {len(names)} report(s) of {run_id}: {', '.join(names)}"):
                results = report_runner.build(app.store, run_id, names)
        except report_runner.ReportError as exc:
            _fail(str(exc))
        if html_file:
            Path(html_file).write_text((report_runner.reports_dir(run) / "report.html").read_text())
    if as_json:
        echo_json(results)
    else:
        registry = plugins.reports()
        out = console()
        for name, result in results.items():
            out.rule(name)
            if result.get("skipped"):
                out.print(Text(f"skipped: {result['skipped']}"))
            else:
                registry[name].render(result, out)
        print_summary(app, run_id, results)
    if html_file:
        click.echo(f"wrote the HTML report to {Path(html_file).resolve()}", err=as_json)


def print_summary(app: App, run_id: str, results: dict[str, dict[str, Any]] | None = None) -> None:
    """The one-screen summary: the regime, the top findings and how many more
    (:mod:`mlrt.summary`), failed reports and gates, where the full report is."""
    from mlrt import report_runner
    from mlrt.summary import SUMMARY_CAP, summarize

    run = app.store.get_run(run_id)
    results = results if results is not None else app.report_results(run_id)
    if not results:
        return
    from rich.text import Text

    out = console()
    wrap = not out.is_terminal

    def line(label: str, style: str, text: str) -> None:
        # Findings quote the data (slice values, categories, column names): printed as text, never as markup.
        out.print(Text.assemble((label, style), text), soft_wrap=wrap)

    out.rule("diagnosis")
    summary = summarize(results)
    for finding in summary.shown:
        line(finding.report, {"problem": "red", "warning": "yellow"}.get(finding.severity, "cyan"), f": {finding.text}")
    if summary.more:
        count = len(summary.more)
        line(
            f"{count} more finding{'s' if count > 1 else ''}",
            "bold",
            f" (the summary shows the top {SUMMARY_CAP}, ranked by severity and gain): all are on the full report",
        )
    for failure in summary.failures:
        line("findings left out", "red", f": {failure}")
    for name, result in results.items():
        if str(result.get("skipped", "")).startswith("failed:"):
            line(name, "red", f": {result['skipped']}")
    if run.state == "FAILED_GATE":
        line("gates failed", "red", f": {run.reason.split('gate(s): ', 1)[-1]}")
    if app.remote is not None:
        out.print(Text(f"full report: mlrt report {run_id} --html FILE"), soft_wrap=wrap)
        return
    page = report_runner.reports_dir(run) / "report.html"
    if page.is_file():
        out.print(Text(f"full report: {page}"), soft_wrap=True)  # a path that wraps cannot be copied


def _diff(app: App, before_id: str, after_id: str, as_json: bool, regressions: bool) -> None:
    from mlrt import report_runner

    before, after = (app.report_results(r) for r in (before_id, after_id))
    for run_id, results in ((before_id, before), (after_id, after)):
        if not results:
            _fail(f"run {run_id} has no reports yet (mlrt report {run_id})")
    overall = report_runner.metric_diff(*(app.store.latest_metrics(r) for r in (before_id, after_id)))
    from rich.text import Text

    rows = report_runner.diff(before, after)
    if regressions:
        rows = [r for r in rows if r["regression"] > 0]
        overall = [o for o in overall if o["worse"]]
    if as_json:
        echo_json({"before": before_id, "after": after_id, "metrics": overall, "rows": rows})
        return
    table(
        f"metrics: {before_id} -> {after_id}",
        ["metric", "before", "after", "change"],
        [(o["metric"], number(o["before"]), number(o["after"]), f"{o['change']:+.4g}") for o in overall],
    )
    table(
        "slices, classes and groups (worse first)",
        ["report", "what", "metric", "before", "after", "change", ""],
        [
            (
                r["report"],
                r["key"],
                r["metric"],
                number(r["before"]),
                number(r["after"]),
                f"{r['change']:+.4g}",
                Text("regressed", style="red") if r["regression"] > 0 else "",
            )
            for r in sorted(rows, key=lambda r: -r["regression"])
        ],
    )
