"""analytics speed: restore tests of a period read off an index; audit chain checkpoints,
so a later verification walks only the entries after the last verified one

Revision ID: 0036
Revises: 0033
Create Date: 2026-12-07 08:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0036"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("verification_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_verification_runs_type_created", ["test_type", "created_at"], unique=False
        )
    op.create_table(
        "audit_checkpoints",
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("after_id", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("verification_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_verification_runs_type_created")
