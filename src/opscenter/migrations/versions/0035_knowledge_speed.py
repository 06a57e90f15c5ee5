"""knowledge: a GIN index of the small title/summary/tags vector (PostgreSQL), so a search
that reads a bounded number of matches finds the title matches among all of them

Revision ID: 0035_knowledge_speed
Revises: 0033
Create Date: 2026-12-07 08:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0035_knowledge_speed"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # FTS5 finds title matches with a column filter of its own index
    op.execute(
        "CREATE INDEX ix_knowledge_articles_search_head ON knowledge_articles "
        "USING gin (search_vector_head)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP INDEX ix_knowledge_articles_search_head")
