"""``mlrt projects``: what each project may hold at once in the controller (operators, on its database)."""

from __future__ import annotations

import click

from mlrt.cli import App
from mlrt.cli.render import echo_json, table

pass_app = click.make_pass_decorator(App)


def _memory(value: str | None) -> int | None:
    from mlrt.units import parse_memory

    if value is None or value == "none":
        return None
    try:
        return parse_memory(value)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (e.g. 64Gi, or none)", param_hint="--memory") from None


def _priority(value: str | None) -> int | None:
    from mlrt.limits import MAX_PRIORITY

    if value is None or value == "none":
        return None
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a whole number (or none)", param_hint="--max-priority") from None
    if not -MAX_PRIORITY <= number <= MAX_PRIORITY:
        raise click.BadParameter(f"must be {-MAX_PRIORITY} to {MAX_PRIORITY} (or none)", param_hint="--max-priority")
    return number


def _number(kind: type, option: str):
    def convert(_ctx: click.Context, _param: click.Parameter, value: str | None):
        if value is None or value == "none":
            return None
        try:
            number = kind(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a number (or none)", param_hint=option) from None
        if number < 0:
            raise click.BadParameter("must be 0 or more (or none)", param_hint=option)
        return number

    return convert


@click.group()
def projects() -> None:
    """Per-project limits of the controller: running runs, CPUs, GPUs and memory at once,
    and the highest priority its jobs may ask for.

    A queued run of a project at one of its limits waits, and `mlrt status` says
    which limit holds it; `none` removes a limit. Limits apply to jobs submitted
    through the controller's API (they have a project)."""


@projects.command("limit")
@click.argument("project")
@click.option("--running", callback=_number(int, "--running"), help="Runs starting, running or finalizing at once.")
@click.option("--cpus", callback=_number(float, "--cpus"), help="Cores those runs ask for in all.")
@click.option("--gpus", callback=_number(int, "--gpus"), help="GPUs those runs ask for in all.")
@click.option("--memory", help="Memory those runs ask for in all (e.g. 256Gi).")
@click.option("--max-priority", help="Highest spec.priority its submissions may ask for (-1000 to 1000).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def limit(
    app: App,
    project: str,
    running: int | None,
    cpus: float | None,
    gpus: int | None,
    memory: str | None,
    max_priority: str | None,
    as_json: bool,
) -> None:
    """Set the limits of PROJECT (the options given; the others keep their value)."""
    _on_database(app)
    if not 0 < len(project) <= 253:
        raise click.BadParameter("must be 1 to 253 characters", param_hint="PROJECT")
    given = {
        "max_running": running,
        "max_cpus": cpus,
        "max_gpus": gpus,
        "max_memory": _memory(memory),
        "max_priority": _priority(max_priority),
    }
    named = {
        "max_running": "--running",
        "max_cpus": "--cpus",
        "max_gpus": "--gpus",
        "max_memory": "--memory",
        "max_priority": "--max-priority",
    }
    source = click.get_current_context()
    current = {row.project: row for row in app.store.project_limits()}.get(project)
    limits = {}
    for key, value in given.items():
        option = named[key].lstrip("-").replace("-", "_")
        if source.get_parameter_source(option) is click.core.ParameterSource.DEFAULT:
            limits[key] = getattr(current, key) if current is not None else None
        else:
            limits[key] = value
    row = app.store.set_project_limit(project, **limits)
    _show([row], as_json)


@projects.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def list_limits(app: App, as_json: bool) -> None:
    """Every project that has limits."""
    _on_database(app)
    _show(app.store.project_limits(), as_json)


def _on_database(app: App) -> None:
    if app.server:
        raise click.UsageError("this command works on the controller's database: use --db URL / MLRT_DB, not --server")


def _show(rows: list, as_json: bool) -> None:
    from mlrt.units import format_bytes

    data = [row.model_dump(mode="json", exclude={"updated_at"}) for row in rows]
    if as_json:
        echo_json(data)
        return

    def shown(value, render=str) -> str:
        return "-" if value is None else render(value)

    table(
        "project limits",
        ["project", "running", "CPUs", "GPUs", "memory", "max priority"],
        [
            (
                r["project"],
                shown(r["max_running"]),
                shown(r["max_cpus"], lambda v: f"{v:g}"),
                shown(r["max_gpus"]),
                shown(r["max_memory"], format_bytes),
                shown(r["max_priority"]),
            )
            for r in data
        ],
    )
