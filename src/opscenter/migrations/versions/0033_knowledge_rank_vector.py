"""knowledge: a bounded stored tsvector to rank search candidates on (PostgreSQL): title,
summary, tags and the body's first 2,000 characters, weighted as in search_vector, kept
in the row, so ranking a page of candidates reads no TOAST

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-07 05:15:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # FTS5 ranks with bm25 over its own index: nothing to add
    op.execute(
        "ALTER TABLE knowledge_articles ADD COLUMN search_vector_rank tsvector "
        "GENERATED ALWAYS AS ("
        "setweight(to_tsvector('english', title), 'A') || "
        "setweight(to_tsvector('english', summary), 'B') || "
        "setweight(to_tsvector('english', tags), 'B') || "
        "setweight(to_tsvector('english', left(body_text, 2000)), 'D')) STORED"
    )
    op.execute("ALTER TABLE knowledge_articles ALTER COLUMN search_vector_rank SET STORAGE MAIN")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER TABLE knowledge_articles DROP COLUMN search_vector_rank")
