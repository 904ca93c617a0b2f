"""The metadata store (sqlmodel over SQLite or PostgreSQL) with alembic migrations.

The model registry's tables (:mod:`mlrt.store.registry`) are imported by what uses them and by
the migrations, not here: every command that only reads runs is spared building them."""

from mlrt.store.engine import StoreUnavailable, database_url, mlrt_home
from mlrt.store.repository import NotFound, Store

__all__ = ["Store", "NotFound", "StoreUnavailable", "database_url", "mlrt_home"]
