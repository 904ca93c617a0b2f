"""Several service processes on one listening socket: ``mlrt controller --processes N``.

One Python process serves the API and, when it leads, reconciles; both share
its one interpreter lock, so under a burst of submissions the launches wait for
the API and the API for the launches, with a second CPU idle. With
``--processes N`` (``MLRT_CONTROLLER_PROCESSES``) this process opens the
listening socket and forks N service processes that accept on it: the kernel
hands each connection to one of them, every one serves the whole API, and
they elect a leader among themselves exactly as replicas in separate pods do
(:mod:`mlrt.service.leader`), so one of them reconciles and the others take
its share of the requests.

This process only supervises: SIGTERM or SIGINT asks each service process
once to stop (the API drains, the leader gives up leadership), and it exits
when they have. A service process that ends on its own (a crash, a lost
database at start-up) stops the others and this process exits with its
status, so the pod or the unit restarts the whole service. A service process
whose supervisor is killed outright stops itself.

``/metrics`` is each process's own: a scrape sees the process that took the
connection (the leader's reconcile figures come from the leader only).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

_log = logging.getLogger("mlrt.service")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def serve_processes(count: int, host: str, port: int, serve_one: Callable[[list[socket.socket]], None]) -> None:
    """Fork ``count`` processes running ``serve_one([listening socket])`` and supervise them;
    returns when all have stopped after a stop signal, else exits with the status of the
    first that ended on its own."""
    listener = _listen(host, port)
    lifeline_read, lifeline_write = os.pipe()  # its end closes when this process dies, however
    children: set[int] = set()
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            _child(listener, lifeline_read, lifeline_write, serve_one)
        children.add(pid)
    os.close(lifeline_read)
    listener.close()  # the children accept; this process only waits
    _log.info("service: %d processes (%s) on %s:%d", count, ", ".join(map(str, sorted(children))), host, port)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            _signal_all(children, signal.SIGTERM)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, stop)
    status = 0
    while children:
        pid, wait_status = os.wait()
        children.discard(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if not stopping:
            _log.error("service process %d ended on its own (status %d): stopping the others", pid, code)
            status = code if code > 0 else 1
            stop(signal.SIGTERM, None)
    os.close(lifeline_write)
    if status:
        sys.exit(status)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket every service process accepts on (as uvicorn binds its own).

    Its protocol is named (``IPPROTO_TCP``, not 0): asyncio sets ``TCP_NODELAY`` on an accepted
    connection only when its socket says TCP, and the accepted ones inherit this socket's. Without
    it every response waited for the client's delayed ACK (Nagle): about 50 ms a request, 150
    no-op requests/s from 8 clients against 870/s from one process that bound its own socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise SystemExit(f"error: cannot listen on {host}:{port}: {exc.strerror}") from None
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


def _signal_all(children: set[int], signum: int) -> None:
    for pid in children:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _child(
    listener: socket.socket, lifeline_read: int, lifeline_write: int, serve_one: Callable[[list[socket.socket]], None]
) -> None:
    """In a forked service process: serve until stopped, then exit (never return to the caller)."""
    code = 1
    try:
        os.close(lifeline_write)
        # Out of the terminal's process group: Ctrl-C reaches the supervisor, which asks each
        # process once (uvicorn takes a second signal as "stop now, skip the graceful shutdown").
        os.setpgid(0, 0)
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        threading.Thread(target=_follow_supervisor, args=(lifeline_read,), name="mlrt-supervisor", daemon=True).start()
        serve_one([listener])
        code = 0
    except KeyboardInterrupt:
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        _log.exception("service process %d failed", os.getpid())
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _follow_supervisor(lifeline_read: int) -> None:
    """The supervisor is gone (even killed with SIGKILL): stop as if it had asked."""
    try:
        while os.read(lifeline_read, 1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
