"""metric points indexed by (run_id, key, step, id), the order they are read in

:meth:`mlrt.store.Store.iter_metric_points` reads a run's points in pages, in
the order ``key, step, id``, each going on from the ``(key, step)`` where the page
before ended; with ``id`` in the index, each page is one range of it, in order,
with nothing to sort. The new index replaces ``ix_metrics_run_key_step``, whose
queries it answers too.

On PostgreSQL both changes run ``CONCURRENTLY``, outside a transaction, so
workers keep writing points while a large table is indexed (a plain ``CREATE
INDEX`` would hold their writes until it is done). A build that was cut short
leaves an invalid index of the new name: it is dropped and built again.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_NEW = "ix_metrics_run_key_step_id"
_OLD = "ix_metrics_run_key_step"


def _replace(drop: str, create: str, columns: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(create, "metrics", columns)
        op.drop_index(drop, table_name="metrics")
        return
    with op.get_context().autocommit_block():
        op.drop_index(create, table_name="metrics", postgresql_concurrently=True, if_exists=True)
        op.create_index(create, "metrics", columns, postgresql_concurrently=True)
        op.drop_index(drop, table_name="metrics", postgresql_concurrently=True)


def upgrade() -> None:
    _replace(_OLD, _NEW, ["run_id", "key", "step", "id"])


def downgrade() -> None:
    _replace(_NEW, _OLD, ["run_id", "key", "step"])
