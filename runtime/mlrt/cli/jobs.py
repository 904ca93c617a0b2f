"""Job commands: submit, validate, status, logs, cancel."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mlrt.cli import EXIT_FAILED, App
from mlrt.cli.progress import follow, tuning_line, tuning_summary
from mlrt.cli.render import echo_json, number, seconds, styled_state, table
from mlrt.logfile import OutputPart, read_output
from mlrt.logscan import is_sdk_record

pass_app = click.make_pass_decorator(App)
_set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override a spec field, e.g. --set spec.hyperparameters.C=0.5 (repeatable).",
)


def _wait(app: App, run_id: str, quiet: bool) -> None:
    """Follow the run to its end, showing its progress (:func:`mlrt.cli.progress.follow`).

    Locally an embedded controller drives it, and Ctrl-C cancels it. In remote
    mode the service drives it and this only watches: Ctrl-C stops watching."""
    if app.remote is not None:
        drive = _watcher(app, run_id)
    else:
        from mlrt.controller import Controller, left_behind

        controller = Controller(app.store)

        def drive(on_tick: Callable[[], None] | None) -> None:
            # Ctrl-C and SIGTERM stop the controller between passes, never inside a write.
            with controller.stopped_by_signals():
                controller.run_until_done([run_id], on_tick=on_tick)

    previous = signal.signal(signal.SIGTERM, _interrupt_watching)
    try:
        follow(app, run_id, drive, quiet)
    except KeyboardInterrupt:
        if app.remote is not None:
            click.echo(f"stopped following {run_id}; it goes on (mlrt cancel {run_id} stops it)", err=True)
            sys.exit(EXIT_FAILED)
        reason = "interrupted in the submitting terminal (Ctrl-C or SIGTERM)"
        if not quiet:
            click.echo(f"stopping {run_id} (Ctrl-C again stops its workers at once)", err=True)
        for left in controller.cancel_on_signal(reason):
            click.echo(left_behind(left), err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt_watching(signum: int, _frame: Any) -> None:
    """SIGTERM ends the wait as Ctrl-C does (the embedded controller takes both over while it drives)."""
    raise KeyboardInterrupt


def _watcher(app: App, run_id: str, interval: float = 0.5) -> Callable[[Callable[[], None] | None], None]:
    """Poll a run on the service until it is terminal, calling ``on_tick`` between polls."""
    from mlrt.states import RunState

    def watch(on_tick: Callable[[], None] | None) -> None:
        while not RunState(app.store.get_run(run_id).state).is_terminal():
            if on_tick is not None:
                on_tick()
            time.sleep(interval)

    return watch


def metrics_table(metrics: dict[str, float], channels: list[str]) -> None:
    """Metrics named ``<channel>_<metric>`` side by side per channel (train vs validation
    gap at a glance); any other metrics in a column of their own."""
    by_name: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        channel = next((c for c in channels if key.startswith(f"{c}_")), "")
        name = key[len(channel) + 1 :] if channel else key
        by_name.setdefault(name, {})[channel] = value
    columns = [c for c in channels if any(c in v for v in by_name.values())]
    if any("" in v for v in by_name.values()):
        columns.append("")
    rows = [(name, *(number(v[c]) if c in v else None for c in columns)) for name, v in sorted(by_name.items())]
    table(None, ["metric", *(c or "value" for c in columns)], rows)


def _summary(app: App, run_id: str) -> None:
    from mlrt.records import RunRecord

    record = RunRecord.load(app.store, run_id)
    click.echo(
        f"run {record.id} {record.state} in {seconds(record.duration()) or '-'}"
        + (f" ({record.attempts} attempts)" if record.attempts > 1 else "")
    )
    if record.state != "SUCCEEDED":
        click.echo(f"reason: {record.reason}")
        print_failure_log(app.store.attempts(run_id), record.state)
    if record.metrics:
        channels = list(app.store.get_job(record.job_id).spec_resolved["spec"]["data"])
        metrics_table(record.metrics, channels)
    from mlrt.cli.reports import print_summary

    print_summary(app, record.id)
    click.echo(f"details: mlrt runs show {record.id}   logs: mlrt logs {record.id}")


@click.command()
@click.argument("spec_file", type=click.Path(dir_okay=False))
@_set_option
@click.option("--wait/--detach", default=True, help="Follow the job here (default) or return at once.")
@click.option("--sanity", is_flag=True, help="Train on a small deterministic subsample first to catch bugs in seconds.")
@click.option("--resume-from", metavar="RUN", help="Start from the latest checkpoint of another run.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display; print only the run id and the outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print the finished run as JSON.")
@pass_app
def submit(
    app: App,
    spec_file: str,
    overrides: tuple[str, ...],
    wait: bool,
    sanity: bool,
    resume_from: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Validate SPEC_FILE, queue it as a job and run it.

    With --detach the job runs in a background controller; follow it with
    `mlrt status RUN` and `mlrt logs -f RUN`.
    """
    from mlrt.controller import check_pool_sizes, process_identity, spawn_controller
    from mlrt.planning import check_columns, check_launchable
    from mlrt.records import RunRecord
    from mlrt.spec import load_spec
    from mlrt.submission import log_dir
    from mlrt.submission import submit as submit_job

    if app.remote is not None:
        run_id = app.remote.submit(spec_file, overrides, sanity, resume_from)
        if not wait:
            if as_json:
                echo_json({"run_id": run_id, "state": "QUEUED", "server": app.remote.server})
            else:
                click.echo(f"submitted {run_id} (detached)\nfollow it: mlrt status {run_id}  |  mlrt logs -f {run_id}")
            return
    else:
        loaded = load_spec(spec_file, overrides)
        check_columns(loaded)
        check_launchable(loaded)
        check_pool_sizes()  # before anything is written: the controller reads them
        run_id = submit_job(app.store, loaded, sanity=sanity, resume_from=resume_from)
    if not wait:
        child = spawn_controller(app.store.url, [run_id], log_dir(run_id, 0).parent / "controller.log")
        app.store.update_run(run_id, owner=process_identity(child.pid))
        if as_json:
            echo_json({"run_id": run_id, "state": "QUEUED", "controller_pid": child.pid})
        else:
            click.echo(f"submitted {run_id} (detached)\nfollow it: mlrt status {run_id}  |  mlrt logs -f {run_id}")
        return
    if not quiet and not as_json:
        click.echo(f"submitted {run_id}")
    _wait(app, run_id, quiet or as_json)
    record = RunRecord.load(app.store, run_id)
    if as_json:
        echo_json(record.to_dict())
    elif quiet:
        click.echo(f"{run_id} {record.state}" + ("" if record.state == "SUCCEEDED" else f": {record.reason}"))
    else:
        _summary(app, run_id)
    if record.state != "SUCCEEDED":
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("spec_file", type=click.Path(dir_okay=False))
@_set_option
@click.option("--json", "as_json", is_flag=True, help="Print the resolved spec and launch request as JSON.")
@click.option(
    "--manifests",
    is_flag=True,
    help="Print only what the backend will create, as YAML: Kubernetes objects (one document each, "
    "ready for kubectl or a schema check, in the order they are created: a finalizing Job, made when "
    "the workers have succeeded, last) or container engine commands.",
)
@pass_app
def validate(app: App, spec_file: str, overrides: tuple[str, ...], as_json: bool, manifests: bool) -> None:
    """Check SPEC_FILE and print the launch request it would make; launch nothing.

    The request shows, per worker, the exact command, the environment mlrt
    sets (the worker also inherits the submitting environment) and the
    working directory. Data channels are shown at the paths they will be
    materialized to. For a TuningJob: the search space and the launch
    request of a first trial (at the low end of every range).
    """
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: a 1 MiB spec prints in 0.2 s, not 13 s
    if app.remote is not None:
        plan = app.remote.validate(spec_file, overrides)
    else:
        from mlrt.planning import validation_plan
        from mlrt.spec import load_spec

        plan = validation_plan(load_spec(spec_file, overrides))
    if manifests:
        launch = (plan.get("example_trial") or plan)["launch"]
        details = launch["details"]
        created = details.get("manifests") or details.get("commands")
        if details.get("manifests") and details.get("finalize"):
            created = [*created, details["finalize"]]  # the reports' Job, once the workers have succeeded
        if not created:
            raise click.UsageError(
                f"the {launch['backend']} backend creates no manifests; see `mlrt validate` without --manifests"
            )
        if as_json:
            echo_json(created)
        elif "manifests" in details:
            click.echo(yaml.dump_all(created, Dumper=dumper, sort_keys=False, width=120), nl=False)
        else:
            click.echo(yaml.dump(created, Dumper=dumper, sort_keys=False, width=120), nl=False)
    elif as_json:
        echo_json(plan)
    else:
        click.echo(f"# {spec_file} is valid; this is what `mlrt submit` would launch (nothing was launched)")
        click.echo(yaml.dump(plan, Dumper=dumper, sort_keys=False, width=120), nl=False)


def _reap(app: App) -> None:
    if app.remote is not None:
        return  # the service's leader takes care of runs whose controller stopped
    if not app.store.active_runs():
        return  # nothing to reap: the controller module (a third of a second to import) is not needed
    from mlrt.controller import reap_orphans

    for run_id in reap_orphans(app.store):
        click.echo(f"note: {run_id} lost its controller and was marked FAILED", err=True)


def print_failure_log(attempts: list[Any], state: str) -> None:
    """Under a failed run's reason: the last lines of the failing worker's log, as the run's
    last attempt kept them (:mod:`mlrt.failures`); nothing for other runs."""
    if state != "FAILED" or not attempts or not attempts[-1].log_tail:
        return
    lines = attempts[-1].log_tail.splitlines()
    click.echo(f"last {len(lines)} lines of the failing worker's log (attempt {attempts[-1].number}):")
    for line in lines:
        click.echo(f"  | {line}")


def _reason(record) -> str:
    """Why a run is in its state; for a queued run, also what holds it back."""
    if record.state == "QUEUED" and record.waiting:
        return f"{record.reason}; waiting: {record.waiting}"
    return record.reason


@click.command()
@click.argument("run_id", required=False)
@click.option("--limit", default=20, show_default=True, help="How many recent runs to list.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def status(app: App, run_id: str | None, limit: int, as_json: bool) -> None:
    """Show one run's state, attempts and recent events, or list recent runs."""
    from mlrt.records import RunRecord

    _reap(app)
    if run_id is None:
        records = RunRecord.load_many(app.store, app.store.list_runs(limit=limit))
        if as_json:
            echo_json([r.to_dict() for r in records])
            return
        rows = [
            (
                r.id,
                styled_state(r.state),
                f"{r.attempts}/{r.max_attempts}",
                r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                seconds(r.duration()),
                _reason(r),
            )
            for r in records
        ]
        table("runs", ["run", "state", "attempts", "created (UTC)", "duration", "reason"], rows)
        return
    record = RunRecord.load(app.store, run_id)
    attempts = app.store.attempts(run_id)
    events = app.store.events(run_id)
    summary = tuning_summary(app, run_id)
    if as_json:
        echo_json(
            {
                **record.to_dict(),
                "attempts": [a.model_dump(exclude={"request", "handle"}) for a in attempts],
                "events": [e.model_dump() for e in events],
                "tuning": summary,
            }
        )
        return
    click.echo(f"run {record.id}: {record.state} — {record.reason}")
    print_failure_log(attempts, record.state)
    if record.state == "QUEUED" and record.waiting:
        click.echo(f"waiting: {record.waiting}")
    if summary is not None:
        click.echo(tuning_line(summary) + f"   (mlrt runs compare {record.id})")
    click.echo(f"attempts {record.attempts}/{record.max_attempts}, running time {seconds(record.duration()) or '-'}")
    if attempts:
        rows = [(a.number, styled_state(a.state), a.exit_code, a.reason) for a in attempts]
        table("attempts", ["#", "state", "exit code", "reason"], rows)
    rows = [(e.at.strftime("%H:%M:%S.%f")[:-3], e.from_state, e.to_state, e.reason) for e in events[-15:]]
    table("events", ["time (UTC)", "from", "to", "reason"], rows)
    if record.metrics:
        table("latest metrics", ["metric", "value"], [(k, number(v)) for k, v in sorted(record.metrics.items())])


def _log_files(attempt_request: dict[str, Any], worker: int | None) -> list[tuple[int, Path]]:
    files = [(w["rank"], Path(w["log_path"])) for w in attempt_request.get("workers", [])]
    return [f for f in files if worker is None or f[0] == worker]


@click.command()
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("--attempt", type=int, help="Which attempt (default: the latest).")
@click.option("--worker", type=int, help="Only this worker's log (rank).")
@pass_app
def logs(app: App, run_id: str, follow: bool, attempt: int | None, worker: int | None) -> None:
    """Print a run's worker logs, prefixed with the worker rank when there are several."""
    from mlrt.states import RunState

    store = app.store
    store.get_run(run_id)
    offsets: dict[tuple[int, int], int] = {}
    shown_attempt = None
    while True:
        # Read the state before the logs, so the pass after the run ends prints everything.
        done = not follow or RunState(store.get_run(run_id).state).is_terminal()
        attempts = store.attempts(run_id)
        if attempt is not None:
            chosen = next((a for a in attempts if a.number == attempt), None)
        else:
            chosen = attempts[-1] if attempts else None
        if chosen is not None:
            if shown_attempt is not None and chosen.number != shown_attempt:
                click.echo(f"--- attempt {chosen.number} ---")
            shown_attempt = chosen.number
            files = _log_files(chosen.request, worker)
            for rank, path in files:
                prefix = f"[worker {rank}] " if len(files) > 1 else ""
                key = (chosen.number, rank)
                while True:  # a piece at a time: a log can be far larger than this process's memory
                    offset = offsets.get(key, 0)
                    part = _log_part(app, run_id, chosen.number, rank, path, offset)
                    if part.start > offset:
                        click.echo(f"{prefix}--- mlrt: bytes {offset}-{part.start} of the output are cut here ---")
                    chunk = part.data
                    whole = done or part.cut_after or (len(chunk) == LOG_PIECE and b"\n" not in chunk)
                    end = len(chunk) if whole else chunk.rfind(b"\n") + 1
                    offsets[key] = part.start + end
                    for line in chunk[:end].decode("utf-8", "replace").splitlines():
                        if not is_sdk_record(line):
                            click.echo(f"{prefix}{line}")
                    if len(chunk) < LOG_PIECE and not part.cut_after:
                        break
        if done:
            return
        if app.remote is None:
            from mlrt.controller import reap_orphans

            reap_orphans(store)
        time.sleep(0.2)


LOG_PIECE = 1 << 20
"""Bytes of a log read at once (the service's log route answers at most as much)."""


def _log_part(app: App, run_id: str, attempt: int, rank: int, path: Path, offset: int) -> OutputPart:
    """At most ``LOG_PIECE`` bytes of a worker's output from ``offset``: read here (output positions,
    :mod:`mlrt.logfile`), from the database when this machine lacks the file (a run of the controller
    service, :mod:`mlrt.logship`), or fetched from the service."""
    if app.remote is not None:
        return app.remote.log_part(run_id, attempt, rank, offset)
    if path.exists():
        return read_output(path, offset, LOG_PIECE)
    from mlrt.logship import read_log

    return read_log(app.store, run_id, attempt, rank, offset, LOG_PIECE)


@click.command()
@click.argument("run_id")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the run to stop.")
@pass_app
def cancel(app: App, run_id: str, timeout: float) -> None:
    """Stop a run: its workers get SIGTERM, then SIGKILL after the grace period."""
    from mlrt.controller import request_cancel
    from mlrt.failures import exception_line
    from mlrt.states import RunState
    from mlrt.store.engine import is_database_fault

    store = app.store
    run = store.get_run(run_id)
    if RunState(run.state).is_terminal():
        click.echo(f"{run_id} already {run.state}; nothing to cancel")
        return
    if app.remote is not None:
        app.remote.cancel(run_id)  # the service's leader stops it; wait below as locally
    try:
        driven = app.remote is not None or request_cancel(store, run, "user")
    except Exception as exc:  # no controller drives it, and its workers could not be stopped from here
        if is_database_fault(exc):
            raise
        problem = exception_line(exc)
        click.echo(f"error: could not stop the workers of {run_id} ({problem}); they may still run", err=True)
        sys.exit(EXIT_FAILED)
    if driven:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = store.get_run(run_id)
            if RunState(run.state).is_terminal():
                click.echo(f"{run_id} {run.state}: {run.reason}")
                return
            time.sleep(0.1)
        said = [e.reason for e in store.events(run_id) if e.reason.startswith("could not stop the workers")]
        why = f" ({said[-1]})" if said else ""
        click.echo(f"{run_id} is still {run.state}; its controller has not stopped it yet{why}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"{run_id} CANCELLED")
