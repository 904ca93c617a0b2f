"""The metadata store (sqlmodel over SQLite or PostgreSQL) with alembic migrations."""

from mlrt.store import registry  # noqa: F401  (its tables join SQLModel.metadata with the others)
from mlrt.store.engine import StoreUnavailable, database_url, mlrt_home
from mlrt.store.repository import NotFound, Store

__all__ = ["Store", "NotFound", "StoreUnavailable", "database_url", "mlrt_home"]
