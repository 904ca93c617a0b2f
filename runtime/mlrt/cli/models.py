"""The model registry's commands: ``mlrt models list|register|show|alias|download``.

Locally they read and write the metadata database (:mod:`mlrt.store.registry`);
with ``--server`` the service's ``/api/v1/models`` routes (:class:`mlrt.remote.RemoteRegistry`),
which show a user token its own project's models only. A reference names one
version: ``churn`` (the latest), ``churn/3`` or ``churn@champion``.
"""

from __future__ import annotations

import getpass
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from mlrt.cli import EXIT_BAD_INPUT, EXIT_FAILED, App
from mlrt.cli.render import echo_json, number, table

pass_app = click.make_pass_decorator(App)


class DownloadFailed(Exception):
    """A model file could not be fetched, or its content is not what was registered."""


class _LocalModels:
    """The registry of the local database (:class:`~mlrt.store.registry.Registry`), changes
    recorded as this machine's user, and the model files where the run's artifacts are; the
    remote twin is :class:`mlrt.remote.RemoteRegistry`."""

    def __init__(self, store: Any):
        from mlrt.store.registry import Registry

        self.store = store
        self.registry = Registry(store)
        self.user = getpass.getuser()

    def list_models(self) -> list[dict[str, Any]]:
        return self.registry.list_models()

    def model(self, name: str) -> dict[str, Any]:
        return self.registry.model(name)

    def version(self, reference: str) -> dict[str, Any]:
        return self.registry.version(reference)

    def register(self, run_id: str, name: str, description: str = "") -> dict[str, Any]:
        return self.registry.register(run_id, name, description=description, user=self.user)

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        return self.registry.set_alias(name, alias, version, user=self.user)

    def delete_alias(self, name: str, alias: str) -> dict[str, Any]:
        return self.registry.delete_alias(name, alias, user=self.user)

    def open_file(self, version: dict[str, Any], path: str) -> Iterator[bytes]:
        """The content of the model file ``path`` of ``version``: the run's artifact, from its
        output folder or its ``s3://`` output."""
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        run_id = version["run_id"]
        row = next((a for a in self.store.artifacts(run_id) if a.path == path), None)
        if row is None:
            raise DownloadFailed(f"run {run_id} no longer has the artifact {path!r}")
        if row.uri.startswith("s3://"):
            from mlrt import s3

            try:
                return iter(s3.open_object(row.uri))
            except FileNotFoundError as exc:
                raise DownloadFailed(f"{path}: {exc}") from None
        file = Path(url2pathname(urlparse(row.uri).path))
        if not file.is_file():
            raise DownloadFailed(f"{path}: {file} no longer exists")
        return _chunks(file)


def _chunks(file: Path) -> Iterator[bytes]:
    with file.open("rb") as handle:
        yield from iter(lambda: handle.read(1 << 20), b"")


def _models(app: App) -> Any:
    if app.remote is not None:
        from mlrt.remote import RemoteRegistry

        return RemoteRegistry(app.remote)
    return _LocalModels(app.store)


def _refused(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_BAD_INPUT)


@click.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """The model registry: versions of named models made from runs, aliases, downloads
    (bare `mlrt models` lists)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_models)


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def list_models(app: App, as_json: bool = False) -> None:
    """Every registered model: latest version, how many versions, aliases."""
    found = _models(app).list_models()
    if as_json:
        echo_json(found)
        return
    rows = [
        (m["name"], m["latest_version"], m["versions"], _aliases_text(m["aliases"]), m["description"] or None)
        for m in found
    ]
    table("models", ["model", "latest", "versions", "aliases", "description"], rows)


def _aliases_text(aliases: dict[str, int]) -> str | None:
    return ", ".join(f"{alias}→{version}" for alias, version in aliases.items()) or None


@models.command("register")
@click.argument("run_id")
@click.option("--name", required=True, help="The model's name: its next version is made from RUN.")
@click.option("--description", default="", help="What this version is.")
@click.option("--json", "as_json", is_flag=True, help="Print the new version as JSON.")
@pass_app
def register(app: App, run_id: str, name: str, description: str, as_json: bool) -> None:
    """Make the next version (1, 2, ...) of model NAME from the SUCCEEDED run RUN_ID and its
    model files (its artifacts but predictions.parquet and reports/)."""
    from mlrt.store.registry import RegistryError

    try:
        version = _models(app).register(run_id, name, description)
    except RegistryError as exc:
        _refused(exc)
    if as_json:
        echo_json(version)
        return
    files = len(version["files"])
    click.echo(
        f"registered {version['model']} version {version['version']} from run {run_id}"
        f" ({files} file{'s' * (files != 1)}: {', '.join(f['path'] for f in version['files'])})"
    )


@models.command("show")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def show(app: App, reference: str, as_json: bool) -> None:
    """A model's versions and history (REFERENCE = NAME), or one version with its lineage
    (NAME/VERSION, NAME@ALIAS): the run, its data digests, code and parents."""
    from mlrt.store.registry import RegistryError

    registry = _models(app)
    try:
        details = registry.model(reference) if "/" not in reference and "@" not in reference else None
        if details is None:
            details = registry.version(reference)
    except RegistryError as exc:
        _refused(exc)
    if as_json:
        echo_json(details)
    elif "versions" in details:
        _print_model(details)
    else:
        _print_version(details)


def _print_model(model: dict[str, Any]) -> None:
    owner = f"  project {model['project']}" if model["project"] else ""
    click.echo(f"model {model['name']}{owner}  created {model['created_at']} by {model['created_by'] or '-'}")
    if model["description"]:
        click.echo(model["description"])
    rows = [
        (
            v["version"],
            v["run_id"],
            v["created_at"],
            ", ".join(v["aliases"]) or None,
            "  ".join(f"{k}={number(x)}" for k, x in v["key_metrics"].items()) or None,
        )
        for v in model["versions"]
    ]
    table("versions", ["version", "run", "created (UTC)", "aliases", "metrics"], rows)
    table("history", ["at (UTC)", "user", "what"], [(e["at"], e["user"], e["what"]) for e in model["history"]])


def _print_version(version: dict[str, Any]) -> None:
    from mlrt.cli.lineage import environment_text, short

    run, lineage = version["run"], version["lineage"]
    aliases = f" ({', '.join(version['aliases'])})" if version["aliases"] else ""
    click.echo(f"model {version['model']} version {version['version']}{aliases}, registered {version['created_at']}")
    if version["description"]:
        click.echo(version["description"])
    click.echo(
        f"run {run['id']} ({run['job']}, {run['state']}, created {run['created_at']})  output {run['output_uri']}"
    )
    git = lineage.get("git")
    git_text = f"{git['commit'][:12]}{' (dirty)' if git['dirty'] else ''}" if git else "-"
    parents = ", ".join(f"{p['relation']} {p['run']}" for p in lineage["parents"]) or "none"
    click.echo(
        f"source {short(lineage['source'])}  git {git_text}  environment {environment_text(lineage)}"
        f"  seed {run['seed']}  parents {parents}"
    )
    table("metrics", ["metric", "value"], [(k, number(v)) for k, v in sorted(version["metrics"].items())])
    table("files", ["path", "size", "sha256"], [(f["path"], f["size"], f["sha256"]) for f in version["files"]])
    table(
        "data",
        ["channel", "uri", "content hash"],
        [(name, run["data"].get(name), digest) for name, digest in sorted(lineage["data"].items())],
    )


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=click.IntRange(min=1), required=False)
@click.option("--delete", is_flag=True, help="Remove the alias instead.")
@click.option("--json", "as_json", is_flag=True, help="Print the model as JSON.")
@pass_app
def alias(app: App, name: str, alias: str, version: int | None, delete: bool, as_json: bool) -> None:
    """Point ALIAS of model NAME at VERSION (moving it if it named another), or --delete it;
    every change is kept in the model's history."""
    from mlrt.store.registry import RegistryError

    if (version is None) != delete:
        raise click.UsageError("give a VERSION to point the alias at, or --delete (not both)")
    registry = _models(app)
    try:
        model = registry.delete_alias(name, alias) if delete else registry.set_alias(name, alias, version)
    except RegistryError as exc:
        _refused(exc)
    if as_json:
        echo_json(model)
    elif delete:
        click.echo(f"{name}@{alias} deleted")
    else:
        click.echo(f"{name}@{alias} is version {version}")


@models.command("download")
@click.argument("reference")
@click.option(
    "-o",
    "--output",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write to.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the files written as JSON.")
@pass_app
def download(app: App, reference: str, folder: Path, as_json: bool) -> None:
    """Write the model files of a version (NAME, NAME/VERSION, NAME@ALIAS) into a folder, each
    checked against the sha256 registered with it (exit 1 when one differs or is gone)."""
    from mlrt.store.registry import RegistryError

    registry = _models(app)
    try:
        version = registry.version(reference)
    except RegistryError as exc:
        _refused(exc)
    try:
        written = fetch_files(registry, version, folder)
    except (DownloadFailed, OSError) as exc:
        click.echo(f"error: {version['model']} version {version['version']}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if as_json:
        echo_json({"model": version["model"], "version": version["version"], "files": written})
        return
    table(
        f"{version['model']} version {version['version']} in {folder}",
        ["file", "size", "sha256 (checked)"],
        [(w["file"], w["size"], w["sha256"]) for w in written],
    )


def fetch_files(registry: Any, version: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """Write each model file of ``version`` below ``folder`` (``registry.open_file`` gives its
    content), hashing as it goes; a file whose sha256 is not the registered one is removed and
    raises :class:`DownloadFailed`. Returns the files written."""
    from mlrt.artifacts import relative_path_problem

    written = []
    for entry in version["files"]:
        problem = relative_path_problem(entry["path"])
        if problem:
            raise DownloadFailed(f"model file path {entry['path']!r} {problem}")
        target = folder / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as out:
                for chunk in registry.open_file(version, entry["path"]):
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if digest.hexdigest() != entry["sha256"]:
            partial.unlink()
            raise DownloadFailed(
                f"{entry['path']}: its content (sha256 {digest.hexdigest()}) is not the registered file"
                f" (sha256 {entry['sha256']}); the run's file changed after it was registered"
            )
        partial.replace(target)
        written.append({"path": entry["path"], "file": str(target), "size": entry["size"], "sha256": entry["sha256"]})
    return written
