"""A worker's stored log: written with a size limit, read back in the worker's own byte positions.

Every backend copies a worker's output into ``worker-RANK.log`` through
:class:`CappedLog`. A log may grow to ``MLRT_MAX_LOG_BYTES`` (100 MiB by
default); past it the log keeps its head (the first half of the limit) and
the most recent output: each time it passes the limit again, the middle is
cut down to a quarter of the limit and replaced by one marker line::

    --- mlrt: this log passed its limit of 104857600 bytes (MLRT_MAX_LOG_BYTES);
        bytes 52428800-734003200 of the worker's output are cut here ---

So a worker that prints 1 GB keeps at most ~100 MiB on disk, with its start
(where tracebacks of set-up problems are) and its end (where the failure is).

Readers work in *output positions* (bytes of what the worker wrote, from its
start), not file offsets, so a reader that remembers a position (the metric
scanner, ``mlrt logs -f``, a controller that adopts running workers) is not
confused when a cut moves the file's tail: :func:`read_output` maps the
position and reports the cut. The cut's place is kept next to the log in
``worker-RANK.log.cut`` (JSON); the writer changes the log and that file
under an exclusive ``flock`` on the log, readers hold a shared one.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Any

DEFAULT_MAX_LOG_BYTES = 100 << 20
MIN_MAX_LOG_BYTES = 1 << 20
_SEARCH = 1 << 16  # how far a cut looks for a line end, so head and tail end and start with whole lines
_COPY = 1 << 20


def max_log_bytes() -> int:
    """The size limit of one worker's stored log: ``MLRT_MAX_LOG_BYTES`` (bytes, at least 1 MiB), else 100 MiB."""
    value = os.environ.get("MLRT_MAX_LOG_BYTES", "")
    try:
        limit = int(value) if value else DEFAULT_MAX_LOG_BYTES
    except ValueError:
        limit = DEFAULT_MAX_LOG_BYTES
    return max(limit, MIN_MAX_LOG_BYTES)


def cut_path(path: Path | str) -> Path:
    """Where the place of a log's cut is kept (absent while the log was never cut)."""
    return Path(f"{path}.cut")


@dataclasses.dataclass
class Cut:
    """Where a log was cut: the file holds output ``[0, head)``, a ``marker`` bytes long marker line,
    then output from ``resume`` on. ``reported``: the controller has recorded it as an event."""

    head: int
    marker: int
    resume: int
    limit: int
    reported: bool = False

    def to_file(self, offset: int) -> int:
        """The file offset of output position ``offset`` (which must not lie in the cut part)."""
        return offset if offset < self.head else self.head + self.marker + offset - self.resume

    def describe(self) -> str:
        """One line for the run's events."""
        return (
            f"it passed its limit of {self.limit} bytes (MLRT_MAX_LOG_BYTES): its first {self.head} bytes and the "
            "most recent output are kept, a marker line stands where output is cut"
        )


def load_cut(path: Path | str) -> Cut | None:
    """The log's cut, or None when it was never cut (call with the log's lock held)."""
    try:
        return Cut(**json.loads(cut_path(path).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _save_cut(path: Path | str, cut: Cut) -> None:
    target = cut_path(path)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(dataclasses.asdict(cut)))
    os.replace(temporary, target)


class CappedLog:
    """Appends a worker's output to its log file, keeping the file within ``limit`` bytes.

    One writer per log; it may continue a log an earlier writer left (an
    adopting controller): :func:`output_size` says how much output the file
    already stands for, which is what a follower skips of a replayed log."""

    def __init__(self, path: Path | str, limit: int | None = None):
        self.path = Path(path)
        self.limit = limit or max_log_bytes()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._size = os.lseek(self._fd, 0, os.SEEK_END)

    def write(self, data: bytes) -> None:
        """Append ``data``; cut the middle when the file passes the limit."""
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self._size)
            self._size += written
            view = view[written:]
        if self._size > self.limit:
            self._cut()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> CappedLog:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def _cut(self) -> None:
        with _locked(self._fd, fcntl.LOCK_EX):
            cut = load_cut(self.path)
            if cut is None:
                head = self._line_end_before(self.limit // 2)
                tail_from, resume_base, reported = 0, 0, False  # file offsets are output positions
            else:
                head, tail_from, resume_base, reported = cut.head, cut.head + cut.marker, cut.resume, cut.reported
            keep_from = self._line_start_after(self._size - self.limit // 4)
            resume = resume_base + keep_from - tail_from
            ends_line = head == 0 or os.pread(self._fd, 1, head - 1) == b"\n"
            marker = (
                ("" if ends_line else "\n")
                + f"--- mlrt: this log passed its limit of {self.limit} bytes (MLRT_MAX_LOG_BYTES); "
                f"bytes {head}-{resume} of the worker's output are cut here ---\n"
            ).encode()
            os.pwrite(self._fd, marker, head)
            target = head + len(marker)
            for start in range(keep_from, self._size, _COPY):  # forward: the target is always behind the source
                os.pwrite(self._fd, os.pread(self._fd, min(_COPY, self._size - start), start), target)
                target += min(_COPY, self._size - start)
            os.ftruncate(self._fd, target)
            self._size = target
            _save_cut(self.path, Cut(head, len(marker), resume, self.limit, reported))

    def _line_end_before(self, position: int) -> int:
        """Just after the last newline in the ``_SEARCH`` bytes before ``position``, else ``position``."""
        start = max(0, position - _SEARCH)
        found = os.pread(self._fd, position - start, start).rfind(b"\n")
        return start + found + 1 if found >= 0 else position

    def _line_start_after(self, position: int) -> int:
        """Just after the first newline in the ``_SEARCH`` bytes from ``position``, else ``position``."""
        found = os.pread(self._fd, _SEARCH, position).find(b"\n")
        return position + found + 1 if 0 <= found < self._size - position - 1 else position


def copy_output(source: int, path: Path | str, *, skip: int = 0) -> None:
    """Copy everything readable from file descriptor ``source`` (a pipe) into the log at ``path``
    until end of file, dropping its first ``skip`` bytes; memory use is one 64 KiB read."""
    with CappedLog(path) as log:
        while chunk := os.read(source, 1 << 16):
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            if chunk:
                log.write(chunk)


@dataclasses.dataclass
class OutputPart:
    """Bytes of a worker's output read from its log: ``data`` starts at output position ``start``
    (after ``offset`` when that was cut); ``cut_after``: the output right after ``data`` was cut."""

    data: bytes
    start: int
    cut_after: bool = False


def read_output(path: Path | str, offset: int, size: int) -> OutputPart:
    """At most ``size`` bytes of the worker's output from position ``offset`` (b'' when there is none yet)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return OutputPart(b"", offset)
    try:
        with _locked(fd, fcntl.LOCK_SH):
            cut = load_cut(path)
            if cut is None:
                return OutputPart(os.pread(fd, size, offset), offset)
            if cut.head <= offset < cut.resume:
                offset = cut.resume
            if offset < cut.head:
                data = os.pread(fd, min(size, cut.head - offset), offset)
                return OutputPart(data, offset, cut_after=offset + len(data) == cut.head)
            return OutputPart(os.pread(fd, size, cut.to_file(offset)), offset)
    finally:
        os.close(fd)


def output_size(path: Path | str) -> int:
    """Bytes of output a log stands for (0 when there is no log); where a follower resumes."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        with _locked(fd, fcntl.LOCK_SH):
            cut = load_cut(path)
            size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    return size if cut is None else cut.resume + size - cut.head - cut.marker


def take_unreported_cut(path: Path | str) -> Cut | None:
    """The log's cut if it was never reported, marking it reported (so each cut becomes one event)."""
    if not cut_path(path).exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        with _locked(fd, fcntl.LOCK_EX):
            cut = load_cut(path)
            if cut is None or cut.reported:
                return None
            _save_cut(path, dataclasses.replace(cut, reported=True))
            return cut
    finally:
        os.close(fd)


class _locked:
    """``flock`` on an open file for the length of a ``with`` block."""

    def __init__(self, fd: int, kind: int):
        self.fd, self.kind = fd, kind

    def __enter__(self) -> None:
        fcntl.flock(self.fd, self.kind)

    def __exit__(self, *_: Any) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
