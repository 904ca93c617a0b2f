"""metric points without a foreign key per row; a summary row per run and metric key

The per-row foreign-key check on ``metrics.run_id`` was about half of
PostgreSQL's CPU in a metric COPY; the store checks the run once per batch
instead. ``metric_summaries`` (count, min, max, highest step and its value per
run and key) is filled here from the points already stored.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# SQLite's foreign key on metrics.run_id has no name: batch mode names it by this convention to drop it.
_SQLITE_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
_SQLITE_FK = "fk_metrics_run_id_runs"

_BACKFILL = """
INSERT INTO metric_summaries (run_id, key, points, low, high, last_step, last_value)
SELECT m.run_id, m.key, COUNT(*), MIN(m.value), MAX(m.value), MAX(m.step),
       (SELECT l.value FROM metrics l WHERE l.run_id = m.run_id AND l.key = m.key
        ORDER BY l.step DESC, l.id DESC LIMIT 1)
FROM metrics m
GROUP BY m.run_id, m.key
"""


def _metrics_run_fk(bind) -> str | None:
    """The name of the foreign key on ``metrics.run_id`` (PostgreSQL names it itself)."""
    for fk in sa.inspect(bind).get_foreign_keys("metrics"):
        if fk["constrained_columns"] == ["run_id"]:
            return fk["name"]
    return None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        with op.batch_alter_table("metrics", naming_convention=_SQLITE_NAMES) as batch:
            batch.drop_constraint(_SQLITE_FK, type_="foreignkey")
    else:
        name = _metrics_run_fk(bind)
        if name is not None:
            op.drop_constraint(name, "metrics", type_="foreignkey")
    op.create_table(
        "metric_summaries",
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.Column("last_step", sa.Integer(), nullable=False),
        sa.Column("last_value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("run_id", "key"),
    )
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.drop_table("metric_summaries")
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        with op.batch_alter_table("metrics") as batch:
            batch.create_foreign_key(_SQLITE_FK, "runs", ["run_id"], ["id"])
    else:
        op.create_foreign_key("metrics_run_id_fkey", "metrics", "runs", ["run_id"], ["id"])
