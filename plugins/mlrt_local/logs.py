"""Local workers' output reaches their logs through this process, which keeps each log within its limit.

A worker does not write its log file itself: its stdout and stderr are a
pipe, and a thread of the launcher's process copies the pipe into the log
with :class:`mlrt.logfile.CappedLog` (head and end kept past
``MLRT_MAX_LOG_BYTES``). The alternatives were worse: ``RLIMIT_FSIZE`` would
also limit the model files a worker writes, and cutting a log the worker
appends to itself loses whatever it writes during the cut. A local worker
dies with the launcher's process (parent-death signal), so the pipe's reader
never goes away before its writer.

A warm worker (forked by a zygote, which opens its log by path) gets a named
pipe in a private temporary folder as its "log path".
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading

from mlrt.logfile import copy_output


class OutputCopy:
    """Copies one worker's output pipe into its log until the worker (and whatever inherited the pipe) closes it."""

    def __init__(self, log_path: str):
        self.log_path = log_path
        self._fifo_folder: str | None = None
        self._thread: threading.Thread | None = None
        self._ended_waited = False

    def pipe(self) -> int:
        """A new pipe whose reading end this copy reads; returns the writing end for the worker
        (the caller closes it once the worker has it)."""
        source, sink = os.pipe()
        self._start(lambda: source)
        return sink

    def named_pipe(self) -> str:
        """A named pipe for a worker that opens its log by path; returns its path."""
        self._fifo_folder = tempfile.mkdtemp(prefix="mlrt-log-")
        path = os.path.join(self._fifo_folder, "output")
        os.mkfifo(path, 0o600)
        self._start(lambda: os.open(path, os.O_RDONLY))  # waits for the worker to open its end
        return path

    def _start(self, open_source) -> None:
        self._thread = threading.Thread(
            target=self._copy, args=(open_source,), name=f"mlrt-log {self.log_path}", daemon=True
        )
        self._thread.start()

    def _copy(self, open_source) -> None:
        source = open_source()
        try:
            copy_output(source, self.log_path)
        finally:
            os.close(source)

    def join(self, timeout: float) -> bool:
        """Wait until the output is fully copied; True when it is."""
        if self._thread is None:
            return True
        if self._fifo_folder is not None and self._thread.is_alive():
            self._release_fifo()
        self._thread.join(timeout)
        done = not self._thread.is_alive()
        if done and self._fifo_folder is not None:
            shutil.rmtree(self._fifo_folder, ignore_errors=True)
            self._fifo_folder = None
        return done

    def wait_after_exit(self, timeout: float) -> None:
        """Once, when the worker has ended: let its last output reach the log (a descendant still
        holding the pipe costs ``timeout`` once; :meth:`join` at clean-up waits for the rest)."""
        if not self._ended_waited:
            self._ended_waited = True
            self.join(timeout)

    def _release_fifo(self) -> None:
        """Unblock a reader still waiting for a worker that never opened the named pipe (open, then close it)."""
        assert self._fifo_folder is not None
        try:
            os.close(os.open(os.path.join(self._fifo_folder, "output"), os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader waits: the worker opened it, or the copy already ended
