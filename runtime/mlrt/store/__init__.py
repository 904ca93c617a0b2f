"""The metadata store (sqlmodel over SQLite or PostgreSQL) with alembic migrations."""

from mlrt.store.engine import database_url, mlrt_home
from mlrt.store.repository import NotFound, Store

__all__ = ["Store", "NotFound", "database_url", "mlrt_home"]
