"""Opening the metadata database: URL resolution, SQLite pragmas and migrations.

The default database is ``sqlite:///$MLRT_HOME/mlrt.db`` (``MLRT_HOME``
defaults to ``~/.mlrt``); ``--db URL`` or ``MLRT_DB`` selects another, such as
``postgresql+psycopg://user@host/db``. Opening a database brings its schema to
the newest migration; concurrent openers wait for one another (a file lock for
SQLite, an advisory lock for PostgreSQL).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from mlrt.store.migrations import HEAD_REVISION

_MIGRATION_LOCK_ID = 0x6D6C7274  # "mlrt": the PostgreSQL advisory lock key


def mlrt_home() -> Path:
    """The per-user folder for the default database, logs and caches."""
    return Path(os.environ.get("MLRT_HOME") or Path.home() / ".mlrt").expanduser()


def database_url(url: str | None = None) -> str:
    """``url`` if given, else ``MLRT_DB``, else the SQLite file under :func:`mlrt_home`."""
    return url or os.environ.get("MLRT_DB") or f"sqlite:///{mlrt_home() / 'mlrt.db'}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL mode and a generous busy timeout."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def current_revision(engine: Engine) -> str | None:
    """The schema revision recorded in the database, or None for an empty one."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        return None


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        import fcntl

        lock_path = Path(str(engine.url.database) + ".migrate.lock")
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_ID})
    else:
        yield


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest migration (cheap when it already is)."""
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    with _migration_lock(engine):
        if current_revision(engine) == HEAD_REVISION:
            return
        config = Config()
        config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
