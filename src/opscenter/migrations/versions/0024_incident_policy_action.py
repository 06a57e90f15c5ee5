"""alert policies: the open_incident action (severity, environment, squad defaults)

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert_policies") as batch:
        batch.add_column(sa.Column("open_incident", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert_policies") as batch:
        batch.drop_column("open_incident")
