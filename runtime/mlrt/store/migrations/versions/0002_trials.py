"""trials: runs link to the tuning run that started them

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("trial", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_runs_parent_id"), ["parent_id"], unique=False)
        batch_op.create_foreign_key("fk_runs_parent_id_runs", "runs", ["parent_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint("fk_runs_parent_id_runs", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_runs_parent_id"))
        batch_op.drop_column("trial")
        batch_op.drop_column("parent_id")
