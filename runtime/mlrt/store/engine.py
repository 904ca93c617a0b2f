"""Opening the metadata database: URL resolution, SQLite pragmas and migrations.

The default database is ``sqlite:///$MLRT_HOME/mlrt.db`` (``MLRT_HOME``
defaults to ``~/.mlrt``); ``--db URL`` or ``MLRT_DB`` selects another, such as
``postgresql+psycopg://user@host/db``. Opening a database brings its schema to
the newest migration; concurrent openers wait for one another (a file lock for
SQLite, an advisory lock for PostgreSQL).

A database that cannot be used (a wrong URL, an unreachable server, a full
disk, a damaged file) is :class:`StoreUnavailable`: one line naming the file,
or the URL with its password masked, and what is wrong with it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from mlrt.store.migrations import HEAD_REVISION

# A pooled server connection idle for longer than this many seconds is pinged
# before its next use; one used more recently is not (see _ping_if_idle).
PING_AFTER_IDLE = 1.0
_MIGRATION_LOCK_ID = 0x6D6C7274  # "mlrt": the PostgreSQL advisory lock key
_MIGRATION_LOCK_POLL = 0.2  # seconds between tries while another process migrates
# Seconds to wait for a PostgreSQL server before calling it unreachable (a URL's own
# ``connect_timeout`` wins); without it a host that drops packets hangs a command for minutes.
CONNECT_TIMEOUT = 10
POOL_SIZE = 20
"""Server connections an engine keeps open once a load needed them (``MLRT_DB_POOL_SIZE``)."""
MAX_OVERFLOW = 10
"""Server connections it opens beyond those at a peak, each closed after one use
(``MLRT_DB_MAX_OVERFLOW``); past both, a thread waits for a connection."""
_URL_HELP = "use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB"


class StoreUnavailable(RuntimeError):
    """The metadata database cannot be opened or used; the message is one line that names
    the file (SQLite) or the URL (password masked) and says what is wrong and what to do."""


def is_database_fault(exc: BaseException) -> bool:
    """Whether ``exc`` says the database itself cannot be used (unreachable, full, damaged,
    wrong schema), as opposed to the database refusing one row's values (integrity, data)."""
    if isinstance(exc, (IntegrityError, DataError)):
        return False
    return isinstance(exc, (StoreUnavailable, DBAPIError, DisconnectionError, PoolTimeout))


def shown_database(url: str) -> str:
    """How messages name a database: the file of an SQLite URL, else the URL with its password masked."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return parsed.render_as_string(hide_password=True)


def database_problem(url: str, exc: BaseException) -> StoreUnavailable:
    """``exc``, raised while opening or using the database at ``url``, as one clear line."""
    if isinstance(exc, StoreUnavailable):
        return exc
    return StoreUnavailable(f"database {shown_database(url)}: {_reason(url, exc)}")


def _reason(url: str, exc: BaseException) -> str:
    if isinstance(exc, NoSuchModuleError):
        return f"unknown kind of database {url.split(':', 1)[0]!r}; {_URL_HELP}"
    if isinstance(exc, ArgumentError):
        return f"not a database URL; {_URL_HELP}"
    if isinstance(exc, ImportError):
        return f"its driver {exc.name or exc} is not installed; {_URL_HELP}"
    message = str(getattr(exc, "orig", None) or exc)
    lowered = message.lower()
    if "full" in lowered and ("disk" in lowered or "database" in lowered):
        return "the disk is full (or the file reached its size limit); free space, or use another --db / MLRT_DB"
    if "not a database" in lowered or "malformed" in lowered:
        return "the file is damaged or not an SQLite database; restore it from a backup, or use another --db / MLRT_DB"
    if "disk i/o error" in lowered:
        return "a write to the disk failed (disk I/O error); check free space, file size limits and the disk"
    if "readonly" in lowered or "read-only" in lowered:
        return "the file is read-only; make it writable, or use another --db / MLRT_DB"
    first = (message.strip().splitlines() or [type(exc).__name__])[0].strip()
    password = _password(url)
    if password:
        first = first.replace(password, "***")
    if isinstance(exc, OSError) or "unable to open" in lowered:
        return f"cannot be opened ({first}); check that its folder exists and is writable"
    if isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)) and not url.startswith(
        "sqlite"
    ):
        return f"cannot connect: {first}"
    return f"{type(getattr(exc, 'orig', None) or exc).__name__}: {first}"


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except ArgumentError:
        return None


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


def _ping_if_idle(engine: Engine) -> None:
    """Check a pooled server connection before use when it has been idle over
    :data:`PING_AFTER_IDLE` seconds, and replace it when the check fails.

    SQLAlchemy's ``pool_pre_ping`` pings before every use: a round trip per
    session, the most frequent statement of a busy controller. A connection
    used a moment ago is as good as its last answer; one that sat in the pool
    may have outlived a database restart or an idle timeout. This is the
    "custom pessimistic ping" of SQLAlchemy's pooling documentation
    ("Disconnect Handling - Pessimistic"), with the idle time as its condition."""

    def connected(_dbapi_connection, record) -> None:
        record.info["mlrt_used_at"] = time.monotonic()

    def checkout(dbapi_connection, record, _proxy) -> None:
        if time.monotonic() - record.info.get("mlrt_used_at", 0.0) <= PING_AFTER_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the driver's own error for a closed connection
            raise DisconnectionError(f"the pooled connection is gone: {exc}") from exc
        if not alive:
            raise DisconnectionError("the pooled connection is gone")  # the pool connects again

    def checkin(_dbapi_connection, record) -> None:
        if record is not None:
            record.info["mlrt_used_at"] = time.monotonic()

    event.listen(engine, "connect", connected)
    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)


def pool_settings() -> dict[str, int]:
    """The connection pool of a server database: :data:`POOL_SIZE` and :data:`MAX_OVERFLOW`, or
    ``MLRT_DB_POOL_SIZE`` and ``MLRT_DB_MAX_OVERFLOW``. An unusable value is a
    :class:`mlrt.settings.SettingError` naming the variable (one line).

    A controller uses a connection at once in every API request, launch and finalizing thread
    and its reconcile pass. With SQLAlchemy's own default (5, and 10 more at a peak) a burst
    of 1,000 jobs submitted and launched opened and closed about 300 connections, each a new
    PostgreSQL backend process, about 3 ms of the server's CPU per job; with 20 kept, 16 to 20
    were opened in all (bench/controller_service.py). The server's ``max_connections`` must cover every process of every
    replica at its peak: ``replicas x processes x (pool + overflow)``."""
    values = {}
    for variable, key, default, least in (
        ("MLRT_DB_POOL_SIZE", "pool_size", POOL_SIZE, 1),
        ("MLRT_DB_MAX_OVERFLOW", "max_overflow", MAX_OVERFLOW, 0),
    ):
        value = os.environ.get(variable, "").strip()
        if not value:
            values[key] = default
        elif value.isdigit() and least <= int(value) <= 1000:
            values[key] = int(value)
        else:
            from mlrt.settings import SettingError

            raise SettingError(f"{variable}: {value!r} is not a whole number from {least} to 1000")
    return values


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL mode and a generous busy timeout.

    A server connection idle in the pool for more than :data:`PING_AFTER_IDLE`
    seconds is checked before its next use (:func:`_ping_if_idle`), so an
    engine outlives a database restart: the first use afterwards reconnects.
    Raises :class:`StoreUnavailable` for a URL that names no usable database."""
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        parsed = make_url(url)
        connect_args = {}
        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT
        # Last in, first out: the connections a steady load needs stay in use (and unpinged);
        # the rest sit idle and are checked when next needed.
        engine = create_engine(
            parsed,
            connect_args=connect_args,
            pool_use_lifo=True,
            **pool_settings(),
        )
        _ping_if_idle(engine)
        return engine
    except (ArgumentError, NoSuchModuleError, ImportError, OSError) as exc:
        raise database_problem(url, exc) from exc


def current_revision(engine: Engine) -> str | None:
    """The schema revision recorded in the database, or None for an empty one
    (an unreachable or damaged database raises)."""
    with engine.connect() as conn:
        return _revision(conn)


def _revision(conn: Connection) -> str | None:
    try:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        conn.commit()  # the read's transaction ends here, not when the connection is next used


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """The one connection a migration uses, outside any transaction, held by one process at a
    time: a file lock beside a SQLite database, a session advisory lock on PostgreSQL, taken on
    the connection itself so that a pool of one connection can migrate."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            from mlrt.folders import exclusive

            with exclusive(Path(str(engine.url.database) + ".migrate.lock")):
                yield conn
        elif engine.dialect.name == "postgresql":
            # Tried, not waited for: a statement waiting for the lock holds a snapshot, which the
            # holder's CREATE INDEX CONCURRENTLY would wait on (PostgreSQL ends that deadlock by
            # failing one of them). A session's lock outlives the transaction that took it, and
            # each try's transaction ends at once, so no snapshot stays open between tries.
            while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_ID}).scalar():
                conn.commit()
                time.sleep(_MIGRATION_LOCK_POLL)
            conn.commit()
            try:
                yield conn
            finally:
                try:
                    conn.rollback()
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_ID})
                    conn.commit()
                except Exception:  # the connection is gone, and its session's lock with it
                    pass
        else:
            yield conn


def check_writable(engine: Engine) -> None:
    """Commit one write (the schema revision, set to itself), so that a full disk or a
    read-only file is found now rather than at the first real write; raises
    :class:`StoreUnavailable`. For processes that run for long (the controller service)."""
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
    except Exception as exc:
        if is_database_fault(exc) or isinstance(exc, OSError):
            raise database_problem(engine.url.render_as_string(hide_password=False), exc) from exc
        raise


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest migration (cheap when it already is);
    :class:`StoreUnavailable` when the database cannot be reached or written."""
    try:
        _migrate(engine)
    except Exception as exc:
        if is_database_fault(exc) or isinstance(exc, OSError):
            raise database_problem(engine.url.render_as_string(hide_password=False), exc) from exc
        raise


def _migrate(engine: Engine) -> None:
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    with _migration_connection(engine) as conn:
        if _revision(conn) == HEAD_REVISION:
            return
        config = Config()
        config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        config.attributes["connection"] = conn  # each migration begins and commits its own transaction
        command.upgrade(config, "head")
