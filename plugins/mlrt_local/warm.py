"""Warm workers for the local launcher: forks of a pre-started Python (see :mod:`mlrt_local.zygote`).

A fresh interpreter plus its imports costs tens to hundreds of milliseconds,
which dominates a cheap tuning trial. With ``compute.warm`` the launcher
keeps one zygote per (interpreter, thread settings, preloaded modules) and
asks it to fork each worker instead. Only commands that this very Python
would run are eligible -- ``python SCRIPT ...`` or ``python -m MODULE ...``
where ``python`` resolves (on the worker's ``PATH``) to the interpreter
running mlrt -- anything else starts cold as usual. Unlike reusing one
process for many trials (Ray Tune's ``reuse_actors``), every trial still gets
a process of its own, so no state leaks from one trial to the next.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

from mlrt.launchers import LaunchError
from mlrt_local.lifetime import die_with_parent

READY_TIMEOUT = 120.0


def _same_python(program: str, path: str) -> bool:
    found = shutil.which(program, path=path)
    if found is None:
        return False
    here = os.path.abspath(sys.executable)
    found = os.path.abspath(found)
    # ``python`` and ``python3`` in one virtual environment's bin are the same interpreter.
    return found == here or (
        os.path.dirname(found) == os.path.dirname(here) and os.path.realpath(found) == os.path.realpath(here)
    )


def eligible(argv: list[str], env: dict[str, str]) -> bool:
    """True when ``argv`` is ``python SCRIPT ...`` or ``python -m MODULE ...`` run by mlrt's own Python."""
    if len(argv) < 2 or not _same_python(argv[0], env.get("PATH", "")):
        return False
    if argv[1] == "-m":
        return len(argv) >= 3
    return not argv[1].startswith("-")


class Zygote:
    """One pre-started Python that forks workers on request and reports their exits.

    Safe to share between threads: the controller launches from a pool thread (:meth:`spawn`
    waits for its reply) while its reconcile thread reads exit notices (:meth:`returncode`);
    whichever thread reads the zygote's output keeps every reply for the one waiting for it."""

    def __init__(self, env: dict[str, str], preload: list[str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlrt_local.zygote", *preload],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        os.set_blocking(self.process.stdout.fileno(), False)  # two threads may find it readable at once
        self.exits: dict[int, int] = {}
        self._pending = b""
        self._replies: list[dict[str, Any]] = []
        self._reading = threading.Lock()  # one reader of the pipe at a time
        self._spawning = threading.Lock()  # one request in flight at a time
        self._expect("ready", READY_TIMEOUT)

    def alive(self) -> bool:
        return self.process.poll() is None

    def spawn(
        self, argv: list[str], env: dict[str, str], cwd: str, log_path: str, data_limit: int | None = None
    ) -> int:
        """Fork one worker; return its pid. ``data_limit``: its memory backstop in bytes
        (:func:`mlrt_local.memory.apply_backstop`), None for none."""
        request = {"argv": argv, "env": env, "cwd": cwd, "log_path": log_path, "data_limit": data_limit}
        with self._spawning:
            try:
                self.process.stdin.write((json.dumps(request) + "\n").encode())
                self.process.stdin.flush()
            except OSError:
                raise LaunchError("the warm worker host exited; retry, or set compute.warm: false") from None
            reply = self._expect("pid", READY_TIMEOUT)
        return int(reply["pid"])

    def returncode(self, pid: int) -> int | None:
        """The exit code of worker ``pid`` once the zygote has reported it (None while it runs)."""
        self._read(timeout=0)
        return self.exits.get(pid)

    def fileno(self) -> int:
        """Readable when the zygote has something to say (a worker exited)."""
        return self.process.stdout.fileno()

    def drain(self) -> None:
        """Record the exit notices that have already arrived, without waiting."""
        self._read(timeout=0)

    def close(self) -> None:
        """Stop the zygote (its remaining workers die with it)."""
        if self.alive():
            self.process.stdin.close()
            self.process.wait()

    def _expect(self, key: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Another thread's read may have taken the reply off the pipe: it is kept here.
            self._read(min(0.1, max(0.0, deadline - time.monotonic())))
            while self._replies:
                message = self._replies.pop(0)
                if "error" in message:
                    raise LaunchError(message["error"])
                if key in message:
                    return message
            if not self.alive():
                raise LaunchError("the warm worker host exited; retry, or set compute.warm: false")
        self.process.kill()
        raise LaunchError(f"the warm worker host did not answer within {timeout:g}s; set compute.warm: false")

    def _read(self, timeout: float) -> None:
        """Take what the zygote said within ``timeout`` seconds: exit notices go to
        :attr:`exits`, replies to the queue :meth:`_expect` reads."""
        fd = self.process.stdout.fileno()
        poller = select.poll()  # not select(): the controller's process may hold descriptors past 1024
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(0.0, timeout) * 1000):
            return
        with self._reading:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            self._pending += chunk
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                message = json.loads(line)
                if "exited" in message:
                    self.exits[int(message["exited"])] = int(message["code"])
                else:
                    self._replies.append(message)
        if not chunk:
            self.process.wait()
