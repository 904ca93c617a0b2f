"""Per-worker helpers that watch a running container: a log follower and a waiter.

Both are child processes of the launcher's process that die with it (Linux
parent-death signal), so a killed controller leaves no watcher behind; the
containers keep running, and the controller that adopts them starts new ones.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from mlrt.logfile import copy_output
from mlrt_local.lifetime import die_with_parent


def _child(argv: list[str], **kwargs) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl-C at the terminal reaches the controller (which
    # stops the run and still wants the log's end), not the watchers.
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent, **kwargs
    )


class LogFollower:
    """Copies ``ENGINE logs -f NAME`` (stdout and stderr, in order) into the worker's log file,
    within its size limit (:class:`mlrt.logfile.CappedLog`).

    The engine runs at ``--log-level=error``: its own warnings (a storage
    layer another engine process is writing, say) share its stderr with the
    container's, and they are not the worker's output.

    The engine replays a container's log from its start, so the follower drops
    the first ``skip`` bytes: a controller that adopts a running container
    passes how much output the log file already stands for
    (:func:`mlrt.logfile.output_size`, cut bytes included), and the file
    continues without a duplicated line."""

    def __init__(self, engine: str, name: str, log_path: str, *, skip: int = 0):
        self.name = name
        self.log_path = Path(log_path)
        self.skip = skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = _child(
            [engine, "--log-level=error", "logs", "-f", name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._thread = threading.Thread(target=self._copy, name=f"logs {name}", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        assert self.process.stdout is not None
        copy_output(self.process.stdout.fileno(), self.log_path, skip=self.skip)
        self.process.stdout.close()
        self.process.wait()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait until the engine has handed over the whole log (the container ended); True when it did."""
        self._thread.join(timeout)
        return self.done()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self._thread.join(5)


class Waiter:
    """``ENGINE wait NAME``: exits when the container does, printing its exit code.

    Its pidfd becomes readable at that moment, which is what the controller
    ``select``s on between passes (:meth:`Launcher.wakeup_fds`)."""

    def __init__(self, engine: str, name: str):
        self.name = name
        self.process = _child([engine, "wait", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pidfd = os.pidfd_open(self.process.pid) if hasattr(os, "pidfd_open") else None
        self._code: int | None = None

    def finished(self) -> bool:
        return self.process.poll() is not None

    def exit_code(self) -> int | None:
        """The container's exit code as the engine printed it; None while running or when it could not tell."""
        if self._code is not None or not self.finished():
            return self._code
        out, _ = self.process.communicate()
        if self.process.returncode == 0:
            try:
                self._code = int(out.decode().split()[-1])
            except (IndexError, ValueError):
                pass
        return self._code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
