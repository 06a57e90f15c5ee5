"""escrow recipients

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 23:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "escrow_recipients",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("recipient", sa.String(length=100), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escrow_recipients")),
        sa.UniqueConstraint("name", name=op.f("uq_escrow_recipients_name")),
        sa.UniqueConstraint("recipient", name=op.f("uq_escrow_recipients_recipient")),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("escrow_recipients")
