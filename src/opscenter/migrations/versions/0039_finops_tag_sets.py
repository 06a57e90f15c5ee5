"""finops tag sets: each distinct tag set of an import is stored once (cost_tag_sets,
numbered within the import) and its lines carry the number, not a JSON value each

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-07 14:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0039"
down_revision: str | None = "0038"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TAGS = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "cost_tag_sets",
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tags", TAGS, nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["cost_imports.id"],
            name=op.f("fk_cost_tag_sets_import_id_cost_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("import_id", "number", name=op.f("pk_cost_tag_sets")),
    )
    op.add_column("cost_lines", sa.Column("tag_set", sa.Integer(), nullable=True))
    op.execute(
        "INSERT INTO cost_tag_sets (import_id, number, tags)"
        " SELECT import_id, row_number() OVER (PARTITION BY import_id ORDER BY tags), tags"
        " FROM (SELECT DISTINCT import_id, tags FROM cost_lines) AS d"
    )
    # A line's set is the one of its import with equal tags (JSON text on SQLite, jsonb
    # on PostgreSQL: equal either way for the values one import wrote).
    op.execute(
        "UPDATE cost_lines SET tag_set = (SELECT s.number FROM cost_tag_sets AS s"
        " WHERE s.import_id = cost_lines.import_id AND s.tags = cost_lines.tags)"
    )
    # SQLite recreates the table for these: it keeps its AUTOINCREMENT ids.
    with op.batch_alter_table("cost_lines", table_kwargs={"sqlite_autoincrement": True}) as b:
        b.alter_column("tag_set", existing_type=sa.Integer(), nullable=False)
        b.drop_column("tags")


def downgrade() -> None:
    op.add_column("cost_lines", sa.Column("tags", TAGS, nullable=True))
    op.execute(
        "UPDATE cost_lines SET tags = (SELECT s.tags FROM cost_tag_sets AS s"
        " WHERE s.import_id = cost_lines.import_id AND s.number = cost_lines.tag_set)"
    )
    with op.batch_alter_table("cost_lines", table_kwargs={"sqlite_autoincrement": True}) as b:
        b.alter_column("tags", existing_type=TAGS, nullable=False)
        b.drop_column("tag_set")
    op.drop_table("cost_tag_sets")
