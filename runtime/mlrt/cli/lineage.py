"""``mlrt runs lineage RUN`` (what produced a run, and the runs it came from) and
``mlrt runs source RUN -o DIR`` (the exact code a run ran, restored)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mlrt.cli import EXIT_BAD_INPUT, App
from mlrt.cli.render import echo_json, table

pass_app = click.make_pass_decorator(App)


def short(digest: str | None, width: int = 12) -> str:
    """A digest cut for a table (``sha256:`` dropped); '-' for none."""
    return digest.removeprefix("sha256:")[:width] if digest else "-"


def environment_text(entry: dict[str, Any]) -> str:
    """Where a run's code ran, in one cell: the image and its digests, or the packages' count and hash."""
    if entry.get("image"):
        digests = ", ".join(short(d) for d in entry.get("image_digests") or []) or "digest not seen yet"
        return f"{entry['image']} @ {digests}"
    if entry.get("packages") is None:
        return "-"
    return f"python {entry.get('python')}, {entry['packages']} packages {short(entry.get('packages_sha256'))}"


def lineage_rows(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for item in entries:
        via = f"{item['relation']} of {item['of']}" if item.get("relation") else "this run"
        if item.get("missing"):
            rows.append((item["depth"], item["run"], via, "-", "-", "-", item["missing"]))
            continue
        data = ", ".join(f"{name} {short(digest)}" for name, digest in sorted(item["data"].items())) or "-"
        rows.append(
            (item["depth"], item["run"], via, item["state"], short(item["source"]), environment_text(item), data)
        )
    return rows


@click.command("lineage")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def lineage(app: App, run_id: str, as_json: bool) -> None:
    """What produced a run (source, environment, data) and the runs it came from, walked to the first."""
    from mlrt.lineage import walk

    entries = walk(app.store, run_id)
    if as_json:
        echo_json(entries)
        return
    table(
        f"lineage of {run_id}",
        ["depth", "run", "how", "state", "source", "environment", "data"],
        lineage_rows(entries),
    )


@click.command("source")
@click.argument("run_id")
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A new (or empty) folder to restore the code into.",
)
@pass_app
def source(app: App, run_id: str, output: Path) -> None:
    """Restore the exact code a run ran (its source bundle) into a new folder."""
    from mlrt import sources
    from mlrt.bundles import BundleError, digest_of, unpack

    digest = sources.run_digest(app.store.get_run(run_id).record)
    if digest is None:
        click.echo(f"error: run {run_id!r} has no source bundle (only command: jobs have one)", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        data = app.remote.source_bundle(run_id) if app.remote is not None else sources.load(app.store, digest)
        if digest_of(data) != digest:
            raise BundleError(f"the bundle received does not match the run's digest {digest[:12]}")
        files = unpack(data, output)
    except BundleError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"restored {files} files of source {digest[:12]} to {output}")
