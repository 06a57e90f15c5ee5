"""knowledge: a small stored tsvector of title, summary and tags (PostgreSQL), to choose
the candidates that search ranks without reading every match's whole vector

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 23:58:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # FTS5 weighs columns within one index: nothing to add
    # Weighted as in search_vector; a few hundred bytes that stay in the row (MAIN), so
    # ranking every match by it reads no TOAST.
    op.execute(
        "ALTER TABLE knowledge_articles ADD COLUMN search_vector_head tsvector "
        "GENERATED ALWAYS AS ("
        "setweight(to_tsvector('english', title), 'A') || "
        "setweight(to_tsvector('english', summary), 'B') || "
        "setweight(to_tsvector('english', tags), 'B')) STORED"
    )
    op.execute("ALTER TABLE knowledge_articles ALTER COLUMN search_vector_head SET STORAGE MAIN")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER TABLE knowledge_articles DROP COLUMN search_vector_head")
