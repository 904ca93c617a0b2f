"""``mlrt ui``: the web UI over the local store, for the one user running it."""

from __future__ import annotations

import click

from mlrt.cli import App

pass_app = click.make_pass_decorator(App)


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="0: any free port.")
@pass_app
def ui(app: App, host: str, port: int) -> None:
    """Serve the web UI (runs, metrics, tuning jobs, reports) until Ctrl-C.

    It reads the local store (--db / MLRT_DB) and asks for no token: keep the
    default loopback address unless everyone who can reach HOST may see and
    cancel your runs. A team's controller serves the same UI at /ui."""
    import socket

    import uvicorn

    from mlrt.ui.app import LOOPBACK, standalone_app

    if app.server:
        raise click.UsageError("mlrt ui serves the local store; a controller serves its own UI at SERVER/ui")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise click.BadParameter(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from None
    server_app = standalone_app(app.store, host)
    shown = host if ":" not in host else f"[{host}]"
    click.echo(f"mlrt ui: http://{shown}:{sock.getsockname()[1]}/ui/  (Ctrl-C stops it)")
    if host not in LOOPBACK:
        click.echo(f"warning: no sign-in: anyone who reaches {host} can see and cancel these runs", err=True)
    config = uvicorn.Config(server_app, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])
