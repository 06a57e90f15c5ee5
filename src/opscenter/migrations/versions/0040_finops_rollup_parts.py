"""finops roll-up parts: a running import's partial daily sums, rolled up while its file
is read and summed into cost_rollups by its last commit

Revision ID: 0040
Revises: 0039
Create Date: 2026-12-07 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0040"
down_revision: str | None = "0039"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cost_rollup_parts",
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("dimension", sa.String(length=140), nullable=False),
        sa.Column("value", sa.String(length=1024), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("billed_cost", sa.BigInteger(), nullable=False),
        sa.Column("effective_cost", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["cost_imports.id"],
            name=op.f("fk_cost_rollup_parts_import_id_cost_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_rollup_parts")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_cost_rollup_parts_import_id"), "cost_rollup_parts", ["import_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_cost_rollup_parts_import_id"), table_name="cost_rollup_parts")
    op.drop_table("cost_rollup_parts")
