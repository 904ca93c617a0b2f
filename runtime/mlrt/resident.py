"""The ``mlrt`` command's entry point, and the resident process that makes it start fast.

Most of an everyday command's time is Python importing what mlrt is built on (SQLAlchemy,
sqlmodel, pydantic, rich, click and mlrt's own modules): half a second of CPU before any work.
So, like Gradle's daemon or Bazel's server, the first ``mlrt`` command starts a *resident
process* in the background that imports all of that once and waits on a Unix socket. Every
later command is a small client: it hands the resident process its arguments, working folder,
environment, umask, resource limits and its standard input, output and error (the file
descriptors themselves), and the resident process forks a child that runs the command exactly
as ``mlrt.cli.main`` would in the client's own process, writing straight to the client's
terminal or pipes. The client forwards the signals it gets (Ctrl-C, ``kill``) to that child and
exits with the child's exit status, or dies of the same signal; a client killed outright
(SIGKILL) takes its child with it.

What the child does not share with the client: its process id and parent (workers a command
starts are the child's children), its session (it has no controlling terminal, so commands that
ask for a secret at a prompt, ``mlrt login``, run in the client's own process) and its cgroup.
Long-running commands (``mlrt controller``, ``mlrt ui``) run in the client's process too: they
gain nothing and keep their exact process semantics.

The resident process belongs to one user (its socket lives in a folder only that user can
enter, and it answers only peers of its own uid) and to one Python environment (interpreter and
``sys.path``, hashed into the socket's name). It exits when any module it imported or any
``sys.path`` folder changes on disk (an upgrade, an installed plugin, an edited source file:
the next command runs in its own process and starts a fresh one) and after
``MLRT_RESIDENT_IDLE`` seconds without a command (default 600).

``MLRT_RESIDENT=0`` turns it off (every command runs in its own process);
``MLRT_RESIDENT_DIR`` chooses the folder of its socket (default ``$XDG_RUNTIME_DIR/mlrt``, else
``/tmp/mlrt-UID``).

This module is the console script: it imports only the standard library until it knows
whether a resident process will run the command.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys

IN_PROCESS_COMMANDS = frozenset({"controller", "ui", "login"})
"""Commands that always run in the client's own process (see the module's docstring)."""

GLOBAL_OPTIONS_WITH_VALUES = frozenset({"--db", "--server"})

FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
)
"""Signals the client passes on to the child running its command."""

LIMITS = (
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_AS",
    "RLIMIT_STACK",
)
"""Resource limits the child takes from its client (``ulimit`` in the client's shell applies)."""

DEFAULT_IDLE_SECONDS = 600.0
_HEADER = struct.Struct("!I")
_MAX_REQUEST = 16 * 1024 * 1024


def main() -> None:
    """The ``mlrt`` console script: run the command through the resident process when one
    answers, else in this process (starting a resident process for the next command)."""
    if _wanted(sys.argv[1:]):
        path = socket_path()
        if path is not None:
            status = _run_resident(path, sys.argv)
            if status is not None:
                _exit_like(status)
            _start_resident(path)
    from mlrt.cli import main as run_here

    run_here()


def _wanted(args: list[str]) -> bool:
    """Whether this command may run in the resident process."""
    if os.environ.get("MLRT_RESIDENT", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return _command_of(args) not in IN_PROCESS_COMMANDS


def _command_of(args: list[str]) -> str | None:
    """The command word of ``mlrt``'s arguments (after the global options and their values)."""
    arguments = iter(args)
    for arg in arguments:
        if arg in GLOBAL_OPTIONS_WITH_VALUES:
            next(arguments, None)
        elif not arg.startswith("-"):
            return arg
    return None


def socket_path() -> str | None:
    """The socket of this user's resident process for this Python environment; None when its
    folder cannot be made private, or off Linux (it needs ``SO_PEERCRED`` to know who connects):
    then every command runs in its own process."""
    if not (hasattr(socket, "SO_PEERCRED") and hasattr(socket, "send_fds") and hasattr(os, "fork")):
        return None
    folder = os.environ.get("MLRT_RESIDENT_DIR") or (
        os.path.join(os.environ["XDG_RUNTIME_DIR"], "mlrt")
        if os.environ.get("XDG_RUNTIME_DIR")
        else os.path.join(os.environ.get("TMPDIR") or "/tmp", f"mlrt-{os.getuid()}")
    )
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.stat(folder)
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None  # another user's, or open to others: not a place to take commands from
    # What shaped this interpreter's start-up: a resident process started under other settings
    # would run the command with another interpreter, other modules, other warnings filters or
    # another file-name encoding.
    startup = sorted(
        f"{name}={value}"
        for name, value in os.environ.items()
        if name.startswith("PYTHON") or name in ("LANG", "LC_ALL", "LC_CTYPE")
    )
    identity = "\0".join([sys.executable, sys.version, *sys.path, *startup])
    path = os.path.join(folder, f"r-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.sock")
    return path if len(os.fsencode(path)) < 100 else None  # a socket's address holds at most 107 bytes


def pids(folder: str) -> list[int]:
    """The pids of the resident processes whose sockets are in ``folder`` (each writes its pid
    into its lock file), those still running or not."""
    import glob

    found = []
    for lock in glob.glob(os.path.join(folder, "*.lock")):
        with open(lock) as file:
            text = file.read().strip()
        if text:
            found.append(int(text))
    return found


def stop_all(folder: str) -> None:
    """Stop every resident process whose socket is in ``folder``: what a test session or a
    benchmark that gave its commands a folder of their own does at the end."""
    for pid in pids(folder):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


# -- the client -----------------------------------------------------------------------------


def _run_resident(path: str, argv: list[str]) -> int | None:
    """Run ``argv`` in the resident process at ``path``; its wait status (``os.waitstatus_to_exitcode``
    form: a negative number is a signal), or None when no resident process took the command."""
    import resource

    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError:
        connection.close()
        return None
    # A signal this process ignores (SIGINT in a shell's background job) is ignored by the command too.
    ignored = [int(signum) for signum in FORWARDED_SIGNALS if signal.getsignal(signum) == signal.SIG_IGN]
    limits = {}
    for name in LIMITS:
        if hasattr(resource, name):
            limits[name] = resource.getrlimit(getattr(resource, name))
    request = json.dumps(
        {
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": _umask(),
            "limits": limits,
            "ignored": ignored,
        }
    ).encode()
    replies = connection.makefile("rb")
    try:
        socket.send_fds(connection, [_HEADER.pack(len(request)) + request], [0, 1, 2])
        first = _reply(replies)
    except OSError:
        first = None
    if not first or "pid" not in first:
        connection.close()
        return None  # stale, shutting down or gone: run here
    child = first["pid"]

    def forward(signum: int, frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED_SIGNALS:
        if int(signum) not in ignored:
            signal.signal(signum, forward)
    try:
        last = _reply(replies)
    except OSError:
        last = None
    if not last or "status" not in last:
        print("error: the resident mlrt process stopped while running this command", file=sys.stderr)
        return 1
    return int(last["status"])


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _reply(replies) -> dict | None:
    line = replies.readline()
    return json.loads(line) if line else None


def _exit_like(status: int) -> None:
    """Exit as the child did: with its code, or killed by the same signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        status = 128 - status
    os._exit(status)


def _start_resident(path: str) -> None:
    """Start a resident process for ``path`` in the background, detached from this terminal."""
    import subprocess

    log = path[: -len(".sock")] + ".log"
    try:
        with open(log, "ab") as output:
            subprocess.Popen(
                [sys.executable, "-c", "from mlrt.resident import serve_main; serve_main()", path],
                cwd=os.path.dirname(path),  # `-c` puts the working folder on sys.path: a private one
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
                close_fds=True,
            )
    except OSError:
        pass  # the next command tries again; this one runs here either way


# -- the resident process -------------------------------------------------------------------


def serve_main() -> None:
    """``python -c "from mlrt.resident import serve_main; serve_main()" SOCKET``, as the client
    starts it: :func:`serve` with ``MLRT_RESIDENT_IDLE``, imports never taken from the working folder."""
    sys.path[:] = [entry for entry in sys.path if entry not in ("", os.getcwd())]
    serve(sys.argv[1], float(os.environ.get("MLRT_RESIDENT_IDLE") or DEFAULT_IDLE_SECONDS))


def serve(path: str, idle_seconds: float) -> None:
    """Import what commands need, then fork a child per command sent to ``path`` until idle for
    ``idle_seconds`` or until the code it imported changes. One process per ``path``: a second
    one finds the lock taken and exits."""
    import fcntl
    import selectors

    lock = open(path[: -len(".sock")] + ".lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")  # which process to stop, for whoever cleans up (the tests do)
    lock.flush()
    _preload()
    watched = _watched_files()
    import gc

    gc.collect()
    gc.freeze()  # children share the imported modules' pages instead of copying them

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = f"{path}.{os.getpid()}"
    listener.bind(staging)
    os.chmod(staging, 0o600)
    listener.listen(64)
    os.replace(staging, path)  # clients connect only once everything is imported
    identity = os.stat(path).st_ino

    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    os.set_blocking(wakeup_read, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wakeup_read, selectors.EVENT_READ, "child")
    children: dict[int, socket.socket] = {}
    import time

    last_used = time.monotonic()
    accepting = True
    try:
        while accepting or children:
            timeout = max(1.0, idle_seconds - (time.monotonic() - last_used))
            events = selector.select(None if children else timeout)
            if not events and not children and time.monotonic() - last_used >= idle_seconds:
                return
            for key, _ in events:
                if key.data == "child":
                    _drain(wakeup_read)
                elif not _still_mine(path, identity) or _changed(watched):
                    # Replaced by another, or the code changed: take no more commands (the next one
                    # runs in its client and starts a fresh resident process), finish these.
                    accepting = False
                    selector.unregister(listener)
                    listener.close()
                    if _still_mine(path, identity):
                        os.unlink(path)
                    lock.close()  # a fresh resident process may start while these finish
                else:
                    last_used = time.monotonic()
                    _accept(listener, selector, children, lock, wakeup_read, wakeup_write)
            _reap(children)
            if children:
                last_used = time.monotonic()
    finally:
        if _still_mine(path, identity):
            os.unlink(path)


def _preload() -> None:
    """Import the command line, the store, the spec, the controller and the built-in plugins'
    modules (imports only: nothing that reads the environment, which is each command's own).
    Not numpy, pandas or scikit-learn (``mlrt report`` imports them itself): their thread
    pools would start in this process, and a forked child inherits no threads."""
    import importlib

    modules = [
        "mlrt.cli",
        "mlrt.cli.jobs",
        "mlrt.cli.runs",
        "mlrt.cli.reports",
        "mlrt.cli.projects",
        "mlrt.cli.service",
        "mlrt.cli.ui",
        "mlrt.cli.models",
        "mlrt.cli.lineage",
        "mlrt.cli.progress",
        "mlrt.cli.render",
        "mlrt.store",
        "mlrt.store.registry",
        "mlrt.spec",
        "mlrt.submission",
        "mlrt.controller",
        "mlrt.run_search",
        "mlrt.sdk",
        "mlrt.plugins",
        "mlrt.plugin_checks",
        "mlrt.planning",
        "mlrt.columns",
        "mlrt.sources",
        "mlrt.bundles",
        "mlrt.report_runner",
        "mlrt.metric_json",
        "mlrt.service.views",
        "pluggy",
        "pathspec",
        "psutil",
        "sqlite3",
        "tarfile",
        "gzip",
        "glob",
        "difflib",
        "encodings.ascii",
        "rich.console",
        "rich.table",
        "rich.live",
        "rich.progress",
        "yaml",
        "sqlalchemy.dialects.sqlite",
        "sqlalchemy.dialects.postgresql.psycopg",  # where the postgres extra is installed
        "psycopg",
    ]
    from mlrt.plugins import installed_entry_points

    for entry in installed_entry_points():
        if entry.dist is not None and entry.dist.name == "mlrt":
            modules.append(entry.module)
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if name.split(".")[0] != "psycopg" and "psycopg" not in str(exc):
                print(f"resident: not preloaded: {name}: {exc}", file=sys.stderr, flush=True)
        except Exception as exc:  # the command that needs it reports it, in its own words
            print(f"resident: not preloaded: {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # what the first query of every command would do
    import threading

    if threading.active_count() > 1:  # a forked child would lack them: say so in the log
        print(f"resident: {threading.active_count() - 1} threads started while preloading", file=sys.stderr)


def _watched_files() -> dict[str, int]:
    """Modification times of every imported module's file, every ``sys.path`` folder and every
    installed distribution's metadata folder and entry points (read once, before forking)."""
    paths = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
    for entry in filter(None, sys.path):
        paths.add(entry)
        try:
            children = os.listdir(entry)
        except OSError:
            continue
        for child in children:
            if child.endswith((".dist-info", ".egg-info")):
                paths.add(os.path.join(entry, child))
                paths.add(os.path.join(entry, child, "entry_points.txt"))
    watched = {}
    for path in paths:
        if path:
            try:
                watched[path] = os.stat(path).st_mtime_ns
            except OSError:
                pass
    return watched


def _changed(watched: dict[str, int]) -> bool:
    for path, mtime in watched.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False


def _still_mine(path: str, identity: int) -> bool:
    try:
        return os.stat(path).st_ino == identity
    except OSError:
        return False


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _accept(listener, selector, children, lock, wakeup_read: int, wakeup_write: int) -> None:
    """Take one command: check its sender, fork the child that runs it, tell the client its pid."""
    try:
        connection, _ = listener.accept()
    except OSError:
        return
    connection.settimeout(10)
    fds: list[int] = []
    try:
        uid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        data, fds, _, _ = socket.recv_fds(connection, 65536, 3)
        if uid != os.getuid() or len(fds) != 3 or len(data) < _HEADER.size:
            raise ValueError("not a command from this user")
        (size,) = _HEADER.unpack_from(data)
        if size > _MAX_REQUEST:
            raise ValueError("request too large")
        body = bytearray(data[_HEADER.size :])
        while len(body) < size:
            more = connection.recv(size - len(body))
            if not more:
                raise ValueError("request cut short")
            body += more
        request = json.loads(body)
    except (OSError, ValueError):
        connection.close()
        for fd in fds:
            os.close(fd)
        return
    connection.settimeout(None)
    pid = os.fork()
    if pid == 0:
        try:
            selector.close()
            listener.close()
            lock.close()
            for other in children.values():
                other.close()
            for fd in (wakeup_read, wakeup_write):
                os.close(fd)
            _run_child(connection, fds, request)
        finally:
            os._exit(70)  # _run_child never returns; this is its last resort
    for fd in fds:
        os.close(fd)
    children[pid] = connection
    try:
        connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except OSError:
        pass


def _reap(children: dict[int, socket.socket]) -> None:
    """Send each ended child's status to its client."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is not None:
            try:
                connection.sendall(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
            except OSError:
                pass
            connection.close()


def _run_child(connection: socket.socket, fds: list[int], request: dict) -> None:
    """In the forked child: become the client's command (its descriptors, folder, environment,
    umask, limits and arguments), then run it as ``mlrt.cli.main`` would."""
    import io
    import resource
    import threading
    import time

    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in request["ignored"]:
        signal.signal(signum, signal.SIG_IGN)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    for name, (soft, hard) in request["limits"].items():
        limit = getattr(resource, name, None)
        if limit is None:
            continue
        try:
            resource.setrlimit(limit, (soft, hard))
        except (ValueError, OSError):  # cannot raise a hard limit above this process's own
            current_hard = resource.getrlimit(limit)[1]
            try:
                resource.setrlimit(limit, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), current_hard))
            except (ValueError, OSError):
                pass
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        interactive = os.isatty(fd)
        stream = io.open(  # noqa: UP020 (the explicit form says what each argument is for)
            fd,
            "r" if fd == 0 else "w",
            buffering=1 if (interactive or fd == 2) and fd else -1,
            encoding=os.environ.get("PYTHONIOENCODING") or "utf-8",
            errors="strict" if fd == 0 else "backslashreplace" if fd == 2 else "strict",
            closefd=False,
            newline=None if fd == 0 else "\n",
        )
        if unbuffered and fd:
            stream.reconfigure(write_through=True)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    sys.argv = list(request["argv"])

    def follow_client() -> None:
        """A client that went away without a word (SIGKILL) takes its command with it."""
        try:
            while connection.recv(4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=follow_client, name="mlrt-resident-client", daemon=True).start()
    from mlrt.cli import main as run_command

    run_command()
