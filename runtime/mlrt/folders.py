"""Checking that the folders a run writes to (output, checkpoints, logs) can take writes before it starts.

A read-only file system, a full disk or missing permissions would otherwise
surface as a worker's traceback, or worse, as output lost after training.
Such a folder is not retried: waiting does not make it writable. Also the
lock files that make processes of one machine take turns (:func:`exclusive`).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# One block: enough for a full file system to refuse it.
PROBE_BYTES = 4096
# A file system whose probe was synced this many seconds ago or less is not synced again:
# the three folders of a launch, and the launches of a busy controller, share one sync.
SYNC_EVERY = 1.0
_synced_at: dict[int, float] = {}  # device -> when a probe on it was last synced (monotonic)


class NotWritable(Exception):
    """A folder a run needs cannot be created or written; the message names the folder and the system's reason."""


def ensure_writable(path: Path, what: str) -> None:
    """Create ``path`` (and its parents) and write, sync and remove a small file in it.

    ``what`` names the folder in the message (``output``, ``checkpoint``,
    ``log``). Raises :class:`NotWritable` like ``output folder /x/y is not
    writable: Read-only file system``. The sync is skipped on a file system
    synced by a probe in the last :data:`SYNC_EVERY` seconds: a sync waits for
    everything the system has to write there (a database's log included), and
    a controller launching many runs would wait for it three times a run.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".mlrt-write-probe-")
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            device = os.fstat(fd).st_dev
            if time.monotonic() - _synced_at.get(device, float("-inf")) > SYNC_EVERY:
                os.fsync(fd)  # some file systems report a full disk only when the data goes out
                _synced_at[device] = time.monotonic()
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise NotWritable(f"{what} folder {path} is not writable: {exc.strerror or exc}") from exc


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` (created, with its folder, if missing): the
    processes of one machine that use the same file take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
