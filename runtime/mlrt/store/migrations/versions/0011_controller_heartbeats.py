"""controller heartbeats: one row per controller process instead of an update of every run it drives

A controller refreshed ``runs.heartbeat_at`` of all its active runs every 2 s:
with 10,000 of them that was 5,000 row updates a second (new row versions,
index entries, WAL) and row locks that other writers of those runs waited
on. ``controller_heartbeats`` keeps one row per process; ``runs.heartbeat_at``
stays as the time the owner took the run over.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "controller_heartbeats",
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("heartbeat_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("owner"),
    )


def downgrade() -> None:
    op.drop_table("controller_heartbeats")
