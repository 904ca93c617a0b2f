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

_LOCK_SPACE = 0x6D6C6F67  # "mlog": first key of the PostgreSQL advisory lock of one worker's chunks


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
        """Store every worker's new output as chunks of at most :data:`CHUNK_BYTES`; the bytes stored."""
        return sum(self._ship(worker) for worker in self.workers)

    def _ship(self, worker: _WorkerLog) -> int:
        try:
            stat = os.stat(worker.path)
        except FileNotFoundError:
            return 0
        seen = (stat.st_size, stat.st_mtime_ns)  # taken before reading: a write after it is shipped next time
        if seen == worker.seen:
            return 0
        shipped = 0
        try:
            with self.store.session() as session:
                self._lock(session, worker.rank)
                cut = load_cut(worker.path)
                if cut is not None and cut.resume > worker.pruned:
                    self._drop_cut(session, worker.rank, cut)
                position = _end(session, self.run_id, self.attempt, worker.rank)
                while True:
                    part = read_output(worker.path, position, CHUNK_BYTES)
                    if part.data:
                        session.execute(
                            insert(LogChunk).values(
                                run_id=self.run_id,
                                attempt=self.attempt,
                                worker=worker.rank,
                                offset=part.start,
                                data=part.data,
                                created_at=utcnow(),
                            )
                        )
                        shipped += len(part.data)
                    position = part.start + len(part.data)
                    if len(part.data) < CHUNK_BYTES and not part.cut_after:
                        break
        except IntegrityError:
            return 0  # a shipper that does not take the lock stored these positions first; the next call goes on
        worker.seen = seen
        if cut is not None:
            worker.pruned = cut.resume
        return shipped

    def _lock(self, session: Session, rank: int) -> None:
        """Serialize the shippers of one worker's log until the transaction ends."""
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            key = zlib.crc32(f"{self.run_id}/{self.attempt}/{rank}".encode()) - (1 << 31)  # a signed 32-bit key
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
                    session.execute(
                        insert(LogChunk).values(
                            run_id=self.run_id,
                            attempt=self.attempt,
                            worker=rank,
                            offset=start,
                            data=piece,
                            created_at=utcnow(),
                        )
                    )


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


def read_log(store: Store, run_id: str, attempt: int, worker: int, offset: int, limit: int = CHUNK_BYTES) -> OutputPart:
    """At most ``limit`` bytes of a worker's stored output from position ``offset``, as
    :func:`mlrt.logfile.read_output` reads them from a file: ``start`` is after ``offset``
    when the output there was cut, ``cut_after`` says the output right after the bytes was
    cut, and the data is empty when nothing is stored from ``offset`` on yet.

    Reads only the chunks it returns (a range of the table's position index)."""
    mine = _worker_chunks(run_id, attempt, worker)
    with store.session() as session:
        covering = session.execute(
            select(LogChunk.offset, func.length(LogChunk.data))
            .where(*mine, LogChunk.offset <= offset)
            .order_by(LogChunk.offset.desc())
            .limit(1)
        ).first()
        first = covering[0] if covering is not None and covering[0] + covering[1] > offset else offset
        rows = session.execute(
            select(LogChunk.offset, LogChunk.data).where(*mine, LogChunk.offset >= first).order_by(LogChunk.offset),
            execution_options={"yield_per": 64},
        )
        pieces: list[bytes] = []
        start = position = None
        size = 0
        cut_after = False
        for chunk_offset, data in rows:
            if start is None:
                start = max(offset, chunk_offset)
                position = chunk_offset
            if chunk_offset != position:
                cut_after = True  # a gap between chunks is output the size limit cut
                break
            skip = max(start - chunk_offset, 0)  # the first chunk may begin before ``offset``
            piece = data[skip : skip + limit - size]
            pieces.append(piece)
            size += len(piece)
            position = chunk_offset + len(data)
            if size >= limit:
                break
        rows.close()
    if start is None:
        return OutputPart(b"", offset)
    return OutputPart(b"".join(pieces), start, cut_after=cut_after)
