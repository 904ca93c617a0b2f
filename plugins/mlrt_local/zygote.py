"""A warm Python that forks a fresh worker per request: ``python -m mlrt_local.zygote [MODULE ...]``.

The local launcher starts one per interpreter and thread setting when a job
asks for warm workers (``compute.warm``; tuning trials do by default). It
imports the given modules once, then waits for requests; each request forks
a child that becomes the worker exactly as ``python SCRIPT ARGS`` or
``python -m MODULE ARGS`` would have: its own session, stdout and stderr in
the worker's log, the worker's environment, working directory, ``sys.argv``
and ``sys.path[0]``, freshly seeded random generators, and the exit steps a
program can observe: non-daemon threads joined, ``atexit`` handlers run, open
files flushed, the exit code of ``sys.exit`` or 1 with the traceback for an
uncaught exception. The modules are not torn down (they are the zygote's,
frozen out of the garbage collector before the first fork), which saves
about 10 ms per worker. What the fork saves is the interpreter start and the
imports, which dominate cheap trials.

Protocol: JSON lines. Requests on stdin are
``{"argv": [...], "env": {...}, "cwd": str, "log_path": str, "data_limit": int | null}``
(``data_limit``: the worker's memory backstop, see :mod:`mlrt_local.memory`) and are
answered on stdout by ``{"pid": int}`` or ``{"error": str}``; whenever a
child exits, ``{"exited": pid, "code": int}`` follows (``code`` as
``subprocess`` reports it: negative for a signal). The zygote exits when its
stdin closes, and its children die with it (Linux parent-death signal), as
it dies with the controller.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import io
import json
import os
import runpy
import select
import signal
import sys
import threading
import traceback
from typing import Any, NoReturn

from mlrt_local.lifetime import die_with_parent
from mlrt_local.memory import apply_backstop

REQUESTS, REPLIES = 0, 1


def send(message: dict[str, Any]) -> None:
    """One reply line, written straight to the fd (no buffer a child could inherit)."""
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(REPLIES, data) :]


def reap() -> None:
    """Report every child that has exited."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _reseed() -> None:
    """Forked children share the zygote's generator states; give each its own."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


def become_worker(request: dict[str, Any], private_fds: list[int]) -> None:
    """In the forked child: turn into the requested worker and run it (never returns normally)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in private_fds:
        os.close(fd)
    os.setsid()
    die_with_parent()
    apply_backstop(request.get("data_limit"))
    log = os.open(request["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    _reseed()
    args = request["argv"][1:]
    try:
        if args[0] == "-m":
            sys.argv = ["-m", *args[2:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args)
            sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
            runpy.run_path(args[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException as exc:  # noqa: BLE001 - reported the way the interpreter would
        traceback.print_exception(type(exc), exc, _user_frames(exc.__traceback__))
        code = 1
    shut_down(code)


def _exit_code(value: object) -> int:
    """What ``sys.exit(value)`` makes the interpreter exit with."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _user_frames(tb):
    """The traceback without the zygote's and runpy's own frames."""
    own = {os.path.abspath(__file__), os.path.abspath(runpy.__file__), "<frozen runpy>"}
    while tb is not None and (
        tb.tb_frame.f_code.co_filename in own or os.path.abspath(tb.tb_frame.f_code.co_filename) in own
    ):
        tb = tb.tb_next
    return tb


def shut_down(code: int) -> NoReturn:
    """The interpreter's exit steps a program can observe, then ``os._exit``."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for obj in gc.get_objects():  # what the worker made; the zygote's objects are frozen
        # type(), not isinstance(): isinstance reads obj.__class__, which some objects answer
        # with a warning (torch.distributed.reduce_op's deprecation, in every torch trial's log).
        if issubclass(type(obj), io.IOBase):
            try:
                if not obj.closed:
                    obj.flush()
            except Exception:  # noqa: BLE001 - a broken file cannot stop the exit
                pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)


def serve(preload: list[str]) -> None:
    for module in preload:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - the worker meets the same error in its own log
            pass
    gc.freeze()  # shared by every fork: neither collected nor copied on write by a child's GC
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    send({"ready": True})
    pending = b""
    while True:
        ready, _, _ = select.select([REQUESTS, wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
        reap()
        if REQUESTS not in ready:
            continue
        chunk = os.read(REQUESTS, 1 << 16)
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            try:
                pid = os.fork()
            except OSError as exc:
                send({"error": f"cannot fork a warm worker: {exc.strerror or exc}"})
                continue
            if pid == 0:
                become_worker(request, [wake_read, wake_write])
            send({"pid": pid})


if __name__ == "__main__":
    serve(sys.argv[1:])
