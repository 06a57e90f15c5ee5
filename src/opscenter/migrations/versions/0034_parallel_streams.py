"""backups and schedules: parallel_streams (PostgreSQL: the table data dumped in this
many concurrent streams, each its own stored part)

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-07 08:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0034"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("backups", "schedules"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("parallel_streams", sa.Integer(), nullable=False, server_default="1")
            )


def downgrade() -> None:
    for table in ("backups", "schedules"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("parallel_streams")
