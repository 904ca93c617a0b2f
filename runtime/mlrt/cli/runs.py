"""Run commands: runs list|show|compare, metrics, artifacts (list, push); ``mlrt plugins``
lives in :mod:`mlrt.cli.plugin_commands` (re-exported here, where the CLI registers it)."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from mlrt.cli import App
from mlrt.cli.plugin_commands import plugins_command  # noqa: F401  (registered from here)
from mlrt.cli.render import echo_json, number, seconds, styled_state, table

if TYPE_CHECKING:  # pragma: no cover
    from mlrt.store.models import Artifact

pass_app = click.make_pass_decorator(App)


@click.group(invoke_without_command=True)
@click.pass_context
def runs(ctx: click.Context) -> None:
    """List, show and compare runs (bare `mlrt runs` lists)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_runs)


@runs.command("list")
@click.option("--state", "states", multiple=True, help="Only runs in this state (repeatable).")
@click.option("--label", "labels", multiple=True, help="Only runs whose job has label KEY=VALUE (repeatable).")
@click.option("--name", help="Only runs whose id or job name contains this text.")
@click.option(
    "--where",
    "conditions",
    multiple=True,
    help="Only runs whose last METRIC OP NUMBER holds, e.g. 'val_loss < 0.3' (repeatable).",
)
@click.option(
    "--sort",
    default="-created_at",
    show_default=True,
    help="created_at, duration, state, name or a metric key; '-' first for descending.",
)
@click.option("--job", "job_id", help="Only runs of this job (its trials included).")
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0, show_default=True, help="Skip this many matching runs (the next page).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def list_runs(
    app: App,
    states: tuple[str, ...] = (),
    labels: tuple[str, ...] = (),
    name: str | None = None,
    conditions: tuple[str, ...] = (),
    sort: str = "-created_at",
    job_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
    as_json: bool = False,
) -> None:
    """Runs matching the filters, newest first unless --sort says otherwise, with their main metrics
    (and any metric named in --where or --sort)."""
    from mlrt.records import RunRecord
    from mlrt.run_search import query_from_text

    query, problems = query_from_text(
        states=states, labels=labels, name=name, where=conditions, sort=sort, limit=limit, offset=offset, job_id=job_id
    )
    if query is None:
        raise click.UsageError("\n".join(problems))
    page = app.store.find_runs(query)
    records = [RunRecord.of(run, page.params.get(run.id, {}), page.metrics.get(run.id, {})) for run in page.runs]
    if as_json:
        echo_json([r.to_dict() for r in records])
        return
    named = {c.key for c in query.where} | ({sort.removeprefix("-")} - {"created_at", "duration", "state", "name"})
    rows = []
    for r in records:
        shown = {k: v for k, v in r.metrics.items() if k.startswith(("validation_", "val_"))} or r.metrics
        chosen = sorted(shown.items())[:3] + sorted(
            (k, v) for k, v in r.metrics.items() if k in named and k not in shown
        )
        metric_text = "  ".join(f"{k}={number(v)}" for k, v in chosen)
        algorithm = r.params.get("algorithm", "-")
        rows.append((r.id, styled_state(r.state), algorithm, seconds(r.duration()), metric_text))
    shown_range = f"{offset + 1}-{offset + len(records)} of {page.total}" if records else f"none of {page.total}"
    table(f"runs {shown_range}", ["run", "state", "algorithm", "duration", "metrics"], rows)


def run_details(app: App, run_id: str) -> dict[str, Any]:
    """Everything known about a run, as plain data, with ``spec.env`` values hidden."""
    from mlrt.lineage import entry
    from mlrt.records import RunRecord
    from mlrt.service.views import attempt_view, job_view

    store = app.store
    record = RunRecord.load(store, run_id)
    run = store.get_run(run_id)
    job = job_view(store.get_job(run.job_id))
    spec = job["spec_resolved"].get("spec") or {}
    return {
        **record.to_dict(),
        "artifacts": [a.model_dump(exclude={"run_id"}) for a in store.artifacts(run_id)],
        "attempts": [attempt_view(a, spec) for a in store.attempts(run_id)],
        "events": [e.model_dump(exclude={"run_id"}) for e in store.events(run_id)],
        "lineage": entry(run, store.get_job(run.job_id)),
        "reproducibility": {
            **run.record,
            "spec_submitted": job["spec_submitted"],
            "spec_resolved": job["spec_resolved"],
        },
    }


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def show(app: App, run_id: str, as_json: bool) -> None:
    """A run's params, metrics, artifacts and reproducibility record."""
    from mlrt.cli.jobs import print_failure_log

    details = run_details(app, run_id)
    if as_json:
        echo_json(details)
        return
    click.echo(f"run {details['id']}: {details['state']} — {details['reason']}")
    print_failure_log(app.store.attempts(run_id), details["state"])
    if details["state"] == "QUEUED" and details["waiting"]:
        click.echo(f"waiting: {details['waiting']}")
    repro = details["reproducibility"]
    git = repro.get("git")
    git_text = f"{git['commit'][:12]}{' (dirty)' if git['dirty'] else ''}" if git else "not a git checkout"
    click.echo(
        f"priority {details['priority']}  seed {repro.get('seed')}  python {repro.get('python')}  git {git_text}"
        f"  output {details['output_uri']}"
    )
    from mlrt.cli.lineage import environment_text, short

    lineage = details["lineage"]
    parents = ", ".join(f"{p['relation']} {p['run']}" for p in lineage["parents"]) or "none"
    click.echo(f"source {short(lineage['source'])}  environment {environment_text(lineage)}  parents {parents}")
    table("params", ["param", "value"], sorted(details["params"].items()))
    table("metrics (latest)", ["metric", "value"], [(k, number(v)) for k, v in sorted(details["metrics"].items())])
    table(
        "data",
        ["channel", "uri", "content hash"],
        [(k, v["uri"], v["sha256"][:23] + "…") for k, v in repro.get("data", {}).items()],
    )
    table(
        "artifacts",
        ["path", "size", "sha256"],
        [(a["path"], a["size"], a["sha256"][:16] + "…") for a in details["artifacts"]],
    )


@runs.command("compare")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def compare(app: App, run_ids: tuple[str, ...], as_json: bool) -> None:
    """Params and latest metrics of several runs side by side (differing params marked *).

    Given one tuning job, compares its trials (those a resumed search took over
    included): the best trial first, then the other succeeded ones by the objective,
    then the rest; for several objectives, the Pareto front's trials first."""
    from mlrt.records import RunRecord

    winners: set[str] = set()
    mark = "best"
    run = app.store.get_run(run_ids[0]) if len(run_ids) == 1 else None
    job = app.store.get_job(run.job_id) if run is not None else None
    if run is not None and job is not None and job.kind == "TuningJob":
        from mlrt.tuning_results import search_result

        spec = job.spec_resolved["spec"]
        result = search_result(app.store, run, spec)
        winners = {t.id for t in result.winners()}
        mark = "pareto" if result.multi else "best"
        sign = -1 if spec["objective"]["goal"] == "maximize" else 1

        def order(trial: Any) -> tuple[bool, float, int]:
            return trial.id not in winners, sign * result.values[trial.id][0], trial.trial or 0

        scored = sorted((t for t in result.trials if t.state == "SUCCEEDED" and t.id in result.values), key=order)
        records = RunRecord.load_many(app.store, scored + [t for t in result.trials if t not in scored])
        run_ids = tuple(r.id for r in records)
    else:
        records = [RunRecord.load(app.store, r) for r in run_ids]
    if as_json:
        echo_json(
            [
                {"id": r.id, "state": r.state, mark: r.id in winners, "params": r.params, "metrics": r.metrics}
                for r in records
            ]
        )
        return
    rows: list[tuple[Any, ...]] = [("state", *(styled_state(r.state) for r in records))]
    for key in sorted({k for r in records for k in r.params}):
        values = [r.params.get(key) for r in records]
        marker = " *" if len(set(values)) > 1 else ""
        rows.append((f"param {key}{marker}", *values))
    for key in sorted({k for r in records for k in r.metrics}):
        rows.append((key, *(number(r.metrics[key]) if key in r.metrics else None for r in records)))
    table(None, ["", *(f"{r} ({mark})" if r in winners else r for r in run_ids)], rows)


@click.command()
@click.argument("run_id")
@click.option("--key", help="All points of this metric (default: a summary of every metric).")
@click.option("--json", "as_json", is_flag=True, help="Print every point as JSON.")
@click.option(
    "--every",
    type=click.IntRange(min=1, max=2**31 - 1),
    default=1,
    show_default=True,
    help="Print only every Nth point of each metric (the 1st, N+1th, ...), to thin a long series.",
)
@pass_app
def metrics(app: App, run_id: str, key: str | None, as_json: bool, every: int) -> None:
    """A run's metrics: a summary per key (points, last, min, max), or every point of one key.

    The summary is computed by the database; points are printed as they are
    read, so a series of millions of points starts at once and never sits
    whole in memory. A --key the run has no point of is an error (exit 2)
    that lists the keys it has."""
    from mlrt.metric_json import points_json
    from mlrt.states import RunState
    from mlrt.store import NotFound

    run = app.store.get_run(run_id)
    if not key and not as_json:
        rows = [
            (s["key"], s["points"], number(s["last"]), number(s["min"]), number(s["max"]))
            for s in app.store.metric_summary(run_id)
        ]
        table("metrics", ["metric", "points", "last", "min", "max"], rows)
        return
    points = iter(app.store.iter_metric_points(run_id, key, every=every))
    first = next(points, None)
    if first is None and key:
        keys = ", ".join(sorted(app.store.latest_metrics(run_id))) or "none"
        yet = "" if RunState(run.state).is_terminal() else " yet"
        raise NotFound(f"run {run_id} has no metric {key!r}{yet} (its metrics: {keys})")
    series = itertools.chain([first], points) if first is not None else iter(())
    if as_json:
        for chunk in points_json(series):
            click.echo(chunk, nl=False)
    else:
        _stream_points_text(key, series)


def _stream_points_text(key: str | None, points: Iterator[tuple[str, int, float, float]]) -> None:
    """Print one series under its name as two aligned columns, step and value, in chunks as
    they come (a table would have to hold every row to size its columns)."""
    lines = [str(key), f"{'step':>12}  value"]
    for _name, step, value, _stamp in points:
        lines.append(f"{step:>12}  {number(value)}")
        if len(lines) >= 10_000:
            click.echo("\n".join(lines))
            lines.clear()
    if lines:
        click.echo("\n".join(lines))


class _ListByDefault(click.Group):
    """A group whose bare form lists: ``mlrt artifacts RUN`` is ``mlrt artifacts list RUN``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ListByDefault)
def artifacts() -> None:
    """Files a run produced (`mlrt artifacts RUN` lists them); push staged output that did not reach S3."""


@artifacts.command("list")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def list_artifacts(app: App, run_id: str, as_json: bool) -> None:
    """Files a run produced, with size and sha256."""
    app.store.get_run(run_id)
    _print_artifacts(app.store.artifacts(run_id), as_json)


@artifacts.command("push")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the registered artifacts as JSON.")
@pass_app
def push(app: App, run_id: str, as_json: bool) -> None:
    """Upload a run's staged output to its s3:// output and register the artifacts (with sha256).

    For a run that ended "output not uploaded": its files stayed in
    $MLRT_HOME/staging/RUN. The run keeps its state (a run's ending is
    final); the push is recorded as an event. With --server the service
    pushes the files its controller staged.

    Exit 2 when there is nothing to push or a setting is wrong, 1 when S3
    still fails after the retries (MLRT_S3_UPLOAD_BACKOFF)."""
    from mlrt import s3
    from mlrt.artifacts import PushRefused
    from mlrt.artifacts import push as push_output
    from mlrt.cli import EXIT_BAD_INPUT, EXIT_FAILED
    from mlrt.remote import RemoteError

    def retrying(tries: int, exc: Exception, pause: float) -> None:
        click.echo(f"upload try {tries} failed ({type(exc).__name__}: {exc}); next try in {pause:g}s", err=True)

    try:
        items = app.remote.push_output(run_id) if app.remote is not None else push_output(app.store, run_id, retrying)
    except (PushRefused, ValueError) as exc:  # ValueError: a bad setting (MLRT_S3_UPLOAD_BACKOFF, ...)
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except s3.UploadFailed as exc:
        click.echo(f"error: output not uploaded: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except RemoteError as exc:  # refused (4xx) as locally; S3 failing there (502) or no answer is exit 1
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT if exc.status is not None and exc.status < 500 else EXIT_FAILED)
    _print_artifacts(items, as_json)


def _print_artifacts(items: list[Artifact], as_json: bool) -> None:
    if as_json:
        echo_json([a.model_dump(exclude={"run_id"}) for a in items])
        return
    table("artifacts", ["path", "size", "sha256", "uri"], [(a.path, a.size, a.sha256, a.uri) for a in items])
