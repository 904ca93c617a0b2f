"""``mlrt controller``: the long-running controller service of a platform team.

One process serves the HTTP API (:mod:`mlrt.service.api`) and, when it is
the elected leader (:mod:`mlrt.service.leader`), runs the same reconcile
loop as ``mlrt submit`` (:mod:`mlrt.service.loop`). Run several replicas
against one PostgreSQL database for availability: all serve the API, one
launches. The schema is migrated at start-up (concurrent starts wait for
each other).

Settings come from options or the environment: ``MLRT_DB`` (database URL),
``MLRT_ADVERTISE_URL`` (how workers reach this service's tracking
endpoint), ``MLRT_DEFAULT_OUTPUT`` (default ``spec.output.path``, e.g. an
``s3://`` prefix), what user specs may use of this machine
(``MLRT_ALLOWED_BACKENDS``, default ``container,kubernetes``;
``MLRT_ALLOWED_PATHS``; ``MLRT_WORKER_ENV_ALLOW``: see
:mod:`mlrt.service.policy`), and the S3 and Kubernetes client settings
(:mod:`mlrt.s3`, ``mlrt_kubernetes``). ``MLRT_MAX_REQUEST_BYTES`` bounds a
request's body (default 8 MiB; :mod:`mlrt.service.guard`). The service logs to
stderr: failed reconcile passes, and unexpected errors under their request id.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os

from mlrt.settings import SettingError
from mlrt.store import Store

GC_YOUNG_THRESHOLD = 10_000
"""Allocations (net of frees) between collections of the youngest generation in a service
process (Python's default is 700). At 700 a 1,000-job round (submissions and launches) set
off about 1,500 collections and 10 full ones, each walking the objects the first launches
import: 2.2 ms of CPU per job. At 10,000: 61 young collections and no full one, 0.4 ms per
job, and as much garbage freed (38,800 objects against 42,500; bench/README.md, "The cyclic
collector was off in the controller")."""


def serve(
    db: str | None,
    host: str,
    port: int,
    advertise_url: str | None,
    *,
    poll_interval: float = 0.2,
    processes: int = 1,
) -> None:
    """Run the service until SIGTERM/SIGINT; leadership is given up on the way out.

    With ``processes`` > 1 this process checks the settings and the database, opens the
    listening socket and starts that many service processes on it (:mod:`mlrt.service.processes`)."""
    from mlrt.service import policy
    from mlrt.service.guard import max_request_bytes, max_requests_per_caller
    from mlrt.store.engine import check_writable

    max_body = max_request_bytes()  # a bad setting stops the service before it opens anything
    max_requests_per_caller()
    _check_sizes()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    policy.isolate_workers()
    store = Store(db)  # applies pending migrations first
    check_writable(store.engine)  # a full or read-only database stops the service now, in one line
    store.seal_clear_secrets()  # rows written before spec.env values were encrypted
    advertised = advertise_url or f"http://{_reachable(host)}:{port}"
    # Start-up's objects (imports, settings) are kept out of every later collection, and out of
    # the pages a forked service process would copy when its collector walked them.
    gc.freeze()
    if processes > 1:
        from mlrt.service.processes import serve_processes

        store.engine.dispose()  # no connection crosses a fork
        serve_processes(
            processes,
            host,
            port,
            lambda sockets: _serve_one(Store(db), advertised, poll_interval, max_body, host, port, sockets),
        )
        return
    _serve_one(store, advertised, poll_interval, max_body, host, port)


def _serve_one(
    store: Store,
    advertised: str,
    poll_interval: float,
    max_body: int,
    host: str,
    port: int,
    sockets: list | None = None,
) -> None:
    """One service process: the API on ``host:port`` (on ``sockets`` already listening there,
    when given) and a reconcile loop that runs while this process is the elected leader."""
    import uvicorn

    from mlrt.service.api import create_app
    from mlrt.service.loop import ServiceLoop
    from mlrt.service.telemetry import Telemetry

    # The console script paused the cyclic collector for start-up (mlrt.cli.main); a service
    # runs for weeks, and the reference cycles its requests and passes leave must be freed.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.enable()
    telemetry = Telemetry(store)
    loop = ServiceLoop(store, advertised, telemetry, poll_interval=poll_interval)
    app = create_app(store, loop, telemetry, max_body=max_body)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        loop.start()
        yield
        loop.stop()

    app.router.lifespan_context = lifespan
    # loop and http "auto": uvloop and httptools, dependencies of mlrt, else asyncio and h11.
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # uvicorn raises the SIGINT it caught again, once shut down
        pass
    if not server.started:  # the port was taken, or start-up failed: uvicorn.run's exit status
        raise SystemExit(3)


_SIZE_SETTINGS = ("MLRT_MAX_LOG_BYTES", "MLRT_MAX_LINE_BYTES")
"""Sizes the controller reads where a bad value could only fall back in silence (:mod:`mlrt.logfile`,
:mod:`mlrt.logscan`): the service checks them once, at start-up."""


def _check_sizes() -> None:
    for name in _SIZE_SETTINGS:
        raw = os.environ.get(name, "").strip()
        if raw and (not raw.isdigit() or int(raw) < 1):
            raise SettingError(f"{name}: {raw!r} is not a positive number of bytes, e.g. {100 << 20}")


def _reachable(host: str) -> str:
    """A host name workers on this machine can use for a bind address."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
