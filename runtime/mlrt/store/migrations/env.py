"""Alembic environment: runs migrations on the connection mlrt hands it, each migration in a
transaction of its own, so that one may step outside it (``autocommit_block``) for work that
PostgreSQL does only outside a transaction, such as ``CREATE INDEX CONCURRENTLY``."""

from alembic import context
from sqlmodel import SQLModel

import mlrt.store.models  # noqa: F401  (registers the tables on SQLModel.metadata)
import mlrt.store.registry  # noqa: F401  (and the model registry's)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
