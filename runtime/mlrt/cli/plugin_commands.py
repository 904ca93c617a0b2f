"""``mlrt plugins``: the installed plugins (``--check``: every problem with them), and ``mlrt
plugins show NAME``: what one algorithm, backend, data scheme, report, tuner or early stopper is
and which settings it takes."""

from __future__ import annotations

from typing import Any

import click

from mlrt.cli import EXIT_FAILED, App
from mlrt.cli.render import echo_json, table

pass_app = click.make_pass_decorator(App)

KINDS = {
    # registry kind: (what a user calls it, the spec field that names it, the field its settings go in)
    "algorithms": ("algorithm", "spec.algorithm", "spec.hyperparameters", "hyperparameters"),
    "launchers": ("backend", "spec.compute.backend", None, None),
    "data_schemes": ("data scheme", "spec.data.CHANNEL (its URI)", "the URI's query (?name=value&...)", "settings"),
    "reports": ("report", "spec.reports", "spec.report_options.{name}", "options"),
    "tuners": ("tuner", "spec.tuner (TuningJob)", "spec.tuner", "settings"),
    "early_stoppers": ("early stopper", "spec.early_stopping.algorithm (TuningJob)", "spec.early_stopping", "settings"),
}
"""Per registry: the noun, the spec field that chooses the item, where its settings go and the
class attribute that declares them (a mapping of :class:`mlrt.algorithms.Hyperparameter`)."""

_FLAGS = ("task", "runs_images", "survives_controller", "uploads_output", "parallel_aware")
"""Class attributes shown as they are when an item has them."""


@click.group("plugins", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option(
    "--check",
    is_flag=True,
    help="List every problem with the plugins installed here (one line each) and exit 1 if there is any.",
)
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool, check: bool) -> None:
    """Installed plugins: distribution, version, hooks, and what each provides (the service's, with --server).

    Plugins left out by MLRT_LOAD_PLUGINS or MLRT_DISABLE_PLUGINS are listed as
    "not loaded". `mlrt plugins show NAME` describes one algorithm, backend,
    report, tuner, early stopper or data scheme: its settings with types,
    ranges and defaults."""
    if ctx.invoked_subcommand is not None:
        return
    if check:
        _check(as_json)
    else:
        _list(ctx.find_object(App), as_json)


def _check(as_json: bool) -> None:
    """``plugin NAME (dist VERSION): object: problem`` for each problem; exit 1 when any."""
    from mlrt import plugins

    problems = plugins.problems()
    if as_json:
        echo_json(problems)
    elif problems:
        for line in problems:
            click.echo(line)
    else:
        click.echo("no problems found in the installed plugins")
    if problems:
        raise SystemExit(EXIT_FAILED)


def _list(app: App, as_json: bool) -> None:
    from mlrt import plugins

    if app.remote is not None:
        rows = app.remote.get("/plugins")
    else:
        rows = [{**row, "loaded": True} for row in plugins.describe()]
        rows += [{**row, "hooks": [], "provides": {}, "loaded": False} for row in plugins.not_loaded()]
    if as_json:
        echo_json(rows)
        return
    table(
        "plugins",
        ["plugin", "distribution", "version", "hooks", "provides"],
        [
            (
                r["name"],
                r["distribution"],
                r["version"],
                ", ".join(r["hooks"]),
                "; ".join(f"{kind}: {', '.join(names)}" for kind, names in r["provides"].items())
                or (f"not loaded: {r['why']}" if r.get("loaded") is False else ""),
            )
            for r in rows
        ],
    )
    click.echo("details of one (settings, types, ranges, defaults): mlrt plugins show NAME")
    if app.remote is None:
        problems = plugins.problems()
        if problems:
            click.echo(f"{len(problems)} problem(s) with the installed plugins: mlrt plugins --check")


def setting(parameter) -> dict[str, Any]:
    """One :class:`mlrt.algorithms.Hyperparameter` as plain data."""
    return {
        "type": parameter.type.__name__,
        "default": parameter.default,
        "min": parameter.min,
        "max": parameter.max,
        "choices": list(parameter.choices) if parameter.choices is not None else None,
        "log": parameter.log,
        "nullable": parameter.nullable,
        "help": parameter.help,
    }


def describe_item(name: str) -> list[dict[str, Any]]:
    """Every registered item called ``name`` (one per kind that has it), as plain data."""
    from mlrt import plugins
    from mlrt.reports import option_schema

    providers = {
        (kind, item): row for row in plugins.describe() for kind, items in row["provides"].items() for item in items
    }
    found = []
    for kind, (noun, chosen_by, settings_field, attribute) in KINDS.items():
        item = getattr(plugins, kind)().get(name)
        if item is None:
            continue
        provider = providers.get((kind, name), {})
        schema = option_schema(item) if kind == "reports" else getattr(item, attribute, None) if attribute else None
        found.append(
            {
                "name": name,
                "kind": noun,
                "plugin": provider.get("name"),
                "distribution": provider.get("distribution"),
                "version": provider.get("version"),
                "description": getattr(item, "description", "") or "",
                "chosen_by": chosen_by,
                **{flag: getattr(item, flag) for flag in _FLAGS if hasattr(item, flag)},
                "settings_field": settings_field.format(name=name) if settings_field else None,
                "settings": {key: setting(p) for key, p in (schema or {}).items()},
            }
        )
    return found


def _range(entry: dict[str, Any]) -> str:
    if entry["choices"] is not None:
        return "one of " + ", ".join(map(str, entry["choices"]))
    if entry["min"] is None and entry["max"] is None:
        return ""
    low = "-inf" if entry["min"] is None else entry["min"]
    high = "inf" if entry["max"] is None else entry["max"]
    return f"[{low}, {high}]" + (" (log scale)" if entry["log"] else "")


@plugins_command.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def show(name: str, as_json: bool) -> None:
    """What NAME (an algorithm, backend, report, tuner, early stopper or data scheme installed
    here) is, and the settings it takes with their types, ranges and defaults."""
    from mlrt import plugins
    from mlrt.store import NotFound

    found = describe_item(name)
    if not found:
        known = "; ".join(f"{KINDS[k][0]}s: {', '.join(sorted(getattr(plugins, k)()))}" for k in KINDS)
        raise NotFound(f"nothing installed is called {name!r} ({known})")
    if as_json:
        echo_json(found)
        return
    for item in found:
        provider = f"plugin {item['plugin']}" + (
            f" ({item['distribution']} {item['version']})" if item["distribution"] else ""
        )
        click.echo(f"{item['name']}: {item['kind']}, from {provider}; chosen by {item['chosen_by']}")
        if item["description"]:
            click.echo(item["description"])
        for flag in _FLAGS:
            if flag in item:
                click.echo(f"{flag}: {item[flag]}")
        if item["settings"]:
            rows = [
                (
                    key,
                    entry["type"] + (" or null" if entry["nullable"] else ""),
                    _range(entry),
                    entry["default"],
                    entry["help"],
                )
                for key, entry in item["settings"].items()
            ]
            table(f"settings ({item['settings_field']})", ["name", "type", "range", "default", "description"], rows)
        elif item["settings_field"]:
            click.echo(f"settings: none ({item['settings_field']} takes no keys)")
