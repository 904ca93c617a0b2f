"""Leader election among controller replicas, through the database they share.

Every replica serves the API; only the leader reconciles (launches, polls,
retries), so two replicas never launch the same job. On PostgreSQL the
leader holds a session-level advisory lock on a connection of its own: the
lock is released by the server the moment that connection dies, so a killed
or partitioned leader loses it without any timeout to wait out, and a
standby that asks next gets it. On SQLite (one machine) an exclusive
``flock`` on ``<database>.leader.lock`` plays the same part.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import Connection, text

from mlrt.store import Store

_LEADER_LOCK_ID = 0x6D6C7273  # distinct from the migration lock key


class LeaderLock:
    """Try to become the leader, and notice when leadership is lost."""

    def __init__(self, store: Store):
        self.store = store
        self._connection: Connection | None = None
        self._file: int | None = None

    @property
    def held(self) -> bool:
        return self._connection is not None or self._file is not None

    def acquire(self) -> bool:
        """Become the leader if no one is; True while this process is the leader.

        Cheap to call every pass: when held, it only checks that the lock's
        connection is still alive (and gives it up when not)."""
        if self.held:
            return self._still_held()
        if self.store.engine.dialect.name == "postgresql":
            return self._acquire_postgres()
        return self._acquire_file()

    def release(self) -> None:
        """Give leadership up (on shutdown), so a standby takes over at once."""
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LEADER_LOCK_ID})
                self._connection.close()
            except Exception:  # the connection is gone, and with it the lock
                pass
            self._connection = None
        if self._file is not None:
            if self._file >= 0:
                os.close(self._file)  # closing the descriptor drops the flock
            self._file = None

    def _acquire_postgres(self) -> bool:
        connection = self.store.engine.connect()
        try:
            got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LEADER_LOCK_ID}).scalar()
            connection.commit()
        except Exception:
            connection.close()
            raise
        if got:
            self._connection = connection
            return True
        connection.close()
        return False

    def _acquire_file(self) -> bool:
        database = self.store.engine.url.database or ""
        path = Path(database + ".leader.lock") if database and database != ":memory:" else None
        if path is None:
            self._file = -1  # an in-memory database has one process: it leads
            return True
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._file = fd
        return True

    def _still_held(self) -> bool:
        if self._connection is None:
            return True  # a file lock cannot be lost while the descriptor is open
        try:
            self._connection.execute(text("SELECT 1"))
            self._connection.commit()
            return True
        except Exception:
            self._connection = None
            return False
