"""schedules: the sandbox server their restore tests run on

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26 04:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("restore_test_server_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_schedules_restore_test_server_id_servers"),
            "servers",
            ["restore_test_server_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_schedules_restore_test_server_id_servers"), type_="foreignkey"
        )
        batch_op.drop_column("restore_test_server_id")
