"""The ``mlrt`` command line: one click group, commands in modules by noun.

User mistakes (a bad spec, an unknown run id, a broken plugin) print one
line per problem to stderr and exit 2, never a traceback. A job that ends in
any state but SUCCEEDED makes ``submit`` exit 1, and so does a metadata
database that cannot be used (wrong URL, unreachable server, full disk,
damaged file): one line naming the file or URL (password masked).
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import click

from mlrt import __version__

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class App:
    """Per-invocation state shared by commands: where runs live and a lazily opened store.

    Locally that is the metadata database; with ``server`` set, the controller
    service's API (:mod:`mlrt.remote`), which answers the same reads."""

    def __init__(self, db: str | None, server: str | None = None, token: str | None = None):
        self.db = db
        self.server = server
        self.token = token
        self._store = None
        self._remote = None

    @property
    def remote(self):
        """The API client in remote mode, else None."""
        if self.server and self._remote is None:
            from mlrt.remote import ApiClient, saved_token

            self._remote = ApiClient(self.server, self.token or saved_token(self.server))
        return self._remote

    def report_results(self, run_id: str) -> dict[str, Any]:
        """The stored report results of a run (built earlier)."""
        if self.remote is not None:
            return self.remote.report_results(run_id)
        from mlrt import report_runner

        return report_runner.load_results(self.store, run_id)

    @property
    def store(self):
        if self._store is None:
            if self.remote is not None:
                from mlrt.remote import RemoteStore

                self._store = RemoteStore(self.remote)
            else:
                from mlrt.store import Store

                self._store = Store(self.db)
            # Start-up imports are done: keep their objects out of future
            # collections and turn the collector back on (main() paused it).
            gc.freeze()
            gc.enable()
        return self._store


class MlrtGroup(click.Group):
    """Turns user-facing errors into one clear line each: exit code 2 for the user's
    input, 1 for a database that cannot be used."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:
            # Imported only on the way out of a failed command: a command that succeeds does not
            # pay for the spec models (mlrt.spec) and the API client (mlrt.remote) it never used.
            from mlrt.plugins import PluginError
            from mlrt.remote import RemoteError
            from mlrt.settings import SettingError
            from mlrt.spec import SpecError
            from mlrt.store import NotFound, database_url
            from mlrt.store.engine import database_problem, is_database_fault

            if isinstance(exc, SpecError):
                for problem in exc.problems:
                    click.echo(f"error: {problem}", err=True)
                sys.exit(EXIT_BAD_INPUT)
            if isinstance(exc, (NotFound, PluginError, RemoteError, SettingError)):
                click.echo(f"error: {exc}", err=True)
                sys.exit(EXIT_BAD_INPUT)
            if not is_database_fault(exc):
                raise
            url = database_url(ctx.obj.db if isinstance(ctx.obj, App) else None)
            click.echo(f"error: {database_problem(url, exc)}", err=True)
            sys.exit(EXIT_FAILED)


@click.group(cls=MlrtGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlrt")
@click.option(
    "--db",
    envvar="MLRT_DB",
    metavar="URL",
    help="Metadata database URL (default: sqlite under $MLRT_HOME, ~/.mlrt).",
)
@click.option(
    "--server",
    envvar="MLRT_SERVER",
    metavar="URL",
    help="Use the controller service at URL instead of the local database (token: MLRT_TOKEN or mlrt login).",
)
@click.pass_context
def cli(ctx: click.Context, db: str | None, server: str | None) -> None:
    """mlrt: submit, track and diagnose training jobs."""
    ctx.obj = App(db, server, os.environ.get("MLRT_TOKEN"))


def _register() -> None:
    from mlrt.cli import jobs, projects, reports, runs, service, ui
    from mlrt.plugins import PluginError, get_plugin_manager

    for command in (jobs.submit, jobs.validate, jobs.status, jobs.logs, jobs.cancel):
        cli.add_command(command)
    for command in (service.controller, service.tokens, service.login, projects.projects, ui.ui):
        cli.add_command(command)
    for command in (runs.runs, runs.metrics, runs.artifacts, runs.plugins_command, reports.report):
        cli.add_command(command)
    from mlrt.cli.models import models

    cli.add_command(models)
    from mlrt.cli import lineage

    runs.runs.add_command(lineage.lineage)
    runs.runs.add_command(lineage.source)
    try:
        get_plugin_manager().hook.mlrt_commands(cli=cli)
    except PluginError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)


def main() -> None:
    """Console-script entry point.

    Exits with ``os._exit`` once output is flushed: every command has committed
    its writes by then, and skipping interpreter teardown (hundreds of
    SQLAlchemy and pydantic objects) takes a tenth of a second off each call.
    """
    # Importing SQLAlchemy, sqlmodel and pydantic allocates many objects; the
    # cyclic collector running during start-up costs ~0.1 s and frees nothing.
    gc.disable()
    _register()
    try:
        cli(standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        code = 1
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
