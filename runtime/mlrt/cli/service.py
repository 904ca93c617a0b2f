"""Service commands: ``mlrt controller``, ``mlrt tokens`` and ``mlrt login``."""

from __future__ import annotations

import click

from mlrt.cli import App
from mlrt.cli.render import echo_json, table

pass_app = click.make_pass_decorator(App)


def _database(app: App) -> None:
    """Service administration works on the database itself, never through an API."""
    if app.server:
        raise click.UsageError("this command works on the controller's database: use --db URL / MLRT_DB, not --server")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a pod).")
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--advertise-url",
    envvar="MLRT_ADVERTISE_URL",
    metavar="URL",
    help="How workers reach this service's tracking endpoint (default: http://HOST:PORT).",
)
@click.option("--poll-interval", default=0.2, show_default=True, help="Longest wait between reconcile passes (s).")
@click.option(
    "--processes",
    envvar="MLRT_CONTROLLER_PROCESSES",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Service processes sharing the port: they elect one leader to reconcile and all serve the API "
    "(more than 1 puts the API on other CPUs than the launches).",
)
@pass_app
def controller(app: App, host: str, port: int, advertise_url: str | None, poll_interval: float, processes: int) -> None:
    """Run the controller service: the HTTP API, and the reconcile loop when elected leader.

    The database comes from --db / MLRT_DB (PostgreSQL for a team); its schema
    is migrated at start-up. API docs: http://HOST:PORT/docs. On a database other
    than SQLite it needs the operator key that encrypts spec.env values:
    MLRT_SECRET_KEY or MLRT_SECRET_KEY_FILE (see mlrt.secrets)."""
    from mlrt.secrets import SecretError, check_operator_key
    from mlrt.service import serve
    from mlrt.store import database_url

    _database(app)
    try:
        check_operator_key(database_url(app.db))
    except SecretError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    serve(app.db, host, port, advertise_url, poll_interval=poll_interval, processes=processes)


@click.group()
def tokens() -> None:
    """Create, list and revoke API tokens of the controller service (run where MLRT_DB reaches its database)."""


@tokens.command("create")
@click.option("--user", required=True, help="Who the token belongs to.")
@click.option("--project", help="The project whose jobs it may submit, see and cancel.")
@click.option("--admin", is_flag=True, help="Every project (platform operators); no --project.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def create_token(app: App, user: str, project: str | None, admin: bool, as_json: bool) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    from mlrt.service import auth

    _database(app)
    if admin == bool(project):
        raise click.UsageError("give either --project NAME or --admin")
    token = auth.issue(app.store, "admin" if admin else "user", user, project)
    if as_json:
        echo_json({"token": token, "user": user, "project": project, "kind": "admin" if admin else "user"})
    else:
        click.echo(token)
        click.echo("store it now (mlrt login --server URL): it cannot be shown again", err=True)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def list_tokens(app: App, as_json: bool) -> None:
    """User and admin tokens (ids only: the tokens themselves are not stored)."""
    from mlrt.service import auth

    _database(app)
    rows = [t.model_dump(mode="json", exclude={"secret_hash", "run_id"}) for t in auth.list_tokens(app.store)]
    if as_json:
        echo_json(rows)
        return
    table(
        "tokens",
        ["id", "kind", "user", "project", "created (UTC)", "revoked"],
        [(r["id"], r["kind"], r["user"], r["project"], r["created_at"][:19], r["revoked_at"] or "") for r in rows],
    )


@tokens.command("revoke")
@click.argument("token_id")
@pass_app
def revoke_token(app: App, token_id: str) -> None:
    """Revoke a token by its id (see mlrt tokens list)."""
    from mlrt.service import auth
    from mlrt.store import NotFound

    _database(app)
    if not auth.revoke(app.store, token_id):
        raise NotFound(f"no active token {token_id!r}")
    click.echo(f"token {token_id} revoked")


@click.command()
@click.option(
    "--server", "server", metavar="URL", help="The controller service (default: mlrt --server / MLRT_SERVER)."
)
@click.option("--token", prompt=True, hide_input=True, envvar="MLRT_TOKEN", help="Your API token (prompted for).")
@pass_app
def login(app: App, server: str | None, token: str) -> None:
    """Check a token against the server and save it for later commands (a file only you can read)."""
    from mlrt.remote import ApiClient, save_token

    server = server or app.server
    if not server:
        raise click.UsageError("give --server URL (or set MLRT_SERVER)")
    who = ApiClient(server, token).get("/whoami")
    path = save_token(server, token)
    click.echo(f"logged in to {server} as {who['user']} (project {who['project'] or '*'}); token saved in {path}")
