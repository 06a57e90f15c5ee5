"""backups: an index that serves the list filtered by server and status, newest first

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07 02:15:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_backups_server_status", "backups", ["server_id", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_backups_server_status", table_name="backups")
