"""Worker logs kept in the metadata database, so that every controller replica serves them.

A backend writes each worker's output into a capped log file on the disk of
the controller that watches it (:mod:`mlrt.logfile`). The controller service
runs several replicas, each with a disk of its own, so the leader also copies
what those files gain into the ``log_chunks`` table with :class:`LogShipper`,
and the API answers ``mlrt logs`` from there with :func:`read_log`, on
whichever replica the request reaches.

Chunks are keyed by *output position* (bytes of what the worker wrote, from
its start), the positions :func:`mlrt.logfile.read_output` and the API use, so
a follower's offset means the same in a file and in the database. When a log
passes ``MLRT_MAX_LOG_BYTES`` and its file is cut, the shipper drops the cut
part from the database too: the database keeps what the file keeps, and a
cut is a gap between two chunks, which :func:`read_log` reports as
:func:`read_output` does.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from pathlib import Path

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from mlrt.logfile import Cut, OutputPart, load_cut, read_output
from mlrt.store import Store
from mlrt.store.models import LogChunk, utcnow

CHUNK_BYTES = 1 << 20
"""The most bytes one ``log_chunks`` row holds; a larger piece of output becomes several rows."""

_LOCK_SPACE = 0x6D6C6F67  # "mlog": first key of the PostgreSQL advisory lock of one attempt's chunks


@dataclasses.dataclass
class _WorkerLog:
    rank: int
    path: Path
    seen: tuple[int, int] | None = None
    """(size, mtime) of the file when it was last shipped; unchanged means nothing to ship."""
    pruned: int = 0
    """Output position up to which a cut of the file has been dropped from the database."""


class LogShipper:
    """Copies the new bytes of one attempt's worker log files into the database.

    ``paths[i]`` is worker ``i``'s log file on this machine. Each :meth:`ship`
    stores what the files gained since the database's last chunk of that
    worker, so a controller that takes a run over (a new leader, or a second
    shipper by mistake) continues where the database ends and never stores a
    byte twice. A file that did not change since the last call costs one
    ``stat`` and no query."""

    def __init__(self, store: Store, run_id: str, attempt: int, paths: list[Path]):
        self.store = store
        self.run_id = run_id
        self.attempt = attempt
        self.workers = [_WorkerLog(rank, Path(path)) for rank, path in enumerate(paths)]

    def ship(self) -> int:
        """Store every worker's new output as chunks of at most :data:`CHUNK_BYTES`, in one
        transaction; the bytes stored."""
        changed = []
        for worker in self.workers:
            try:
                stat = os.stat(worker.path)
            except FileNotFoundError:
                continue
            seen = (stat.st_size, stat.st_mtime_ns)  # taken before reading: a later write is shipped next time
            if seen != worker.seen:
                changed.append((worker, seen))
        if not changed:
            return 0
        shipped = 0
        cuts: list[Cut | None] = []
        try:
            with self.store.session() as session:
                self._lock(session)
                for worker, _ in changed:
                    cuts.append(load_cut(worker.path))
                    if cuts[-1] is not None and cuts[-1].resume > worker.pruned:
                        self._drop_cut(session, worker.rank, cuts[-1])
                    shipped += self._copy(session, worker)
        except IntegrityError:
            return 0  # a shipper that does not take the lock stored these positions first; the next call goes on
        for (worker, seen), cut in zip(changed, cuts, strict=True):
            worker.seen = seen
            worker.pruned = cut.resume if cut is not None else worker.pruned
        return shipped

    def _copy(self, session: Session, worker: _WorkerLog) -> int:
        """Insert the worker's output from where its stored chunks end to the end of its file."""
        shipped = 0
        position = _end(session, self.run_id, self.attempt, worker.rank)
        while True:
            part = read_output(worker.path, position, CHUNK_BYTES)
            if part.data:
                self._insert(session, worker.rank, part.start, part.data)
                shipped += len(part.data)
            position = part.start + len(part.data)
            if len(part.data) < CHUNK_BYTES and not part.cut_after:
                return shipped

    def _insert(self, session: Session, rank: int, offset: int, data: bytes) -> None:
        row = {"run_id": self.run_id, "attempt": self.attempt, "worker": rank, "offset": offset, "data": data}
        session.execute(insert(LogChunk).values(**row, created_at=utcnow()))

    def _lock(self, session: Session) -> None:
        """Serialize the shippers of this attempt's logs until the transaction ends."""
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            key = zlib.crc32(f"{self.run_id}/{self.attempt}".encode()) - (1 << 31)  # a signed 32-bit key
            session.execute(text("SELECT pg_advisory_xact_lock(:space, :key)"), {"space": _LOCK_SPACE, "key": key})
        elif dialect == "sqlite":
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")  # the write lock before the first read

    def _drop_cut(self, session: Session, rank: int, cut: Cut) -> None:
        """Remove output ``[cut.head, cut.resume)``, which the file no longer holds, from the stored chunks."""
        mine = _worker_chunks(self.run_id, self.attempt, rank)
        end = LogChunk.offset + func.length(LogChunk.data)
        session.execute(delete(LogChunk).where(*mine, LogChunk.offset >= cut.head, end <= cut.resume))
        straddling = session.execute(
            select(LogChunk.id, LogChunk.offset, LogChunk.data).where(
                *mine, LogChunk.offset < cut.resume, end > cut.head
            )
        ).all()
        for row_id, offset, data in straddling:
            session.execute(delete(LogChunk).where(LogChunk.id == row_id))
            kept = [(offset, data[: max(cut.head - offset, 0)])]
            kept.append((max(offset, cut.resume), data[max(cut.resume - offset, 0) :]))
            for start, piece in kept:
                if piece:
                    self._insert(session, rank, start, piece)


def _worker_chunks(run_id: str, attempt: int, worker: int) -> tuple:
    return (LogChunk.run_id == run_id, LogChunk.attempt == attempt, LogChunk.worker == worker)


def _end(session: Session, run_id: str, attempt: int, worker: int) -> int:
    """The output position right after the last stored chunk of a worker (0 when none)."""
    last = session.execute(
        select(LogChunk.offset + func.length(LogChunk.data))
        .where(*_worker_chunks(run_id, attempt, worker))
        .order_by(LogChunk.offset.desc())
        .limit(1)
    ).scalar()
    return last or 0


def stored_end(store: Store, run_id: str, attempt: int, worker: int) -> int:
    """The output position right after a worker's last stored chunk (0 when none): where a tail ends."""
    with store.session() as session:
        return _end(session, run_id, attempt, worker)


def read_log(store: Store, run_id: str, attempt: int, worker: int, offset: int, limit: int = CHUNK_BYTES) -> OutputPart:
    """At most ``limit`` bytes of a worker's stored output from position ``offset``, as
    :func:`mlrt.logfile.read_output` reads them from a file: ``start`` is after ``offset``
    when the output there was cut, ``cut_after`` says the output right after the bytes was
    cut, and the data is empty when nothing is stored from ``offset`` on yet.

    Ranges of the table's position index: the chunks' sizes first, then the bytes of
    only the chunks that hold the answer."""
    mine = _worker_chunks(run_id, attempt, worker)
    size_of = func.length(LogChunk.data)
    with store.session() as session:
        covering = session.execute(
            select(LogChunk.offset, size_of)
            .where(*mine, LogChunk.offset <= offset)
            .order_by(LogChunk.offset.desc())
            .limit(1)
        ).first()
        first = covering[0] if covering is not None and covering[0] + covering[1] > offset else offset
        spans = session.execute(
            select(LogChunk.offset, size_of).where(*mine, LogChunk.offset >= first).order_by(LogChunk.offset),
            execution_options={"yield_per": 256},
        )
        wanted: list[int] = []
        start = position = 0
        found = 0  # bytes from ``start`` in the wanted chunks
        cut_after = False
        for chunk_offset, length in spans:
            if not wanted:
                start, position = max(offset, chunk_offset), chunk_offset
            if chunk_offset != position:
                cut_after = found <= limit  # a gap between chunks is output the size limit cut
                break
            if found >= limit:
                break
            wanted.append(chunk_offset)
            found += chunk_offset + length - max(start, chunk_offset)
            position = chunk_offset + length
        spans.close()
        if not wanted:
            return OutputPart(b"", offset)
        rows = session.execute(
            select(LogChunk.data)
            .where(*mine, LogChunk.offset >= wanted[0], LogChunk.offset <= wanted[-1])
            .order_by(LogChunk.offset)
        )
        data = b"".join(rows.scalars())
    skip = start - wanted[0]
    return OutputPart(data[skip : skip + limit], start, cut_after=cut_after)
