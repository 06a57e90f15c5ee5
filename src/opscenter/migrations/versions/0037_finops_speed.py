"""finops speed: the cost lines' import index is a BRIN index, which a million-line COPY
maintains almost for free (an import's lines are appended together)

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-07 09:15:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0037"
down_revision: str | None = "0036"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _recreate(using: str | None) -> None:
    op.drop_index("ix_cost_lines_import_day", table_name="cost_lines")
    op.create_index(
        "ix_cost_lines_import_day",
        "cost_lines",
        ["import_id", "charge_day"],
        unique=False,
        postgresql_using=using,
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _recreate("brin")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _recreate(None)
