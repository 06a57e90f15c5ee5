"""knowledge: search indexes for reading (PostgreSQL): a GIN index of the small title/
summary/tags vector, so a search that reads a bounded number of matches finds the title
matches among all of them; and no pending list on either GIN index

GIN's fast update queues new entries in a pending list that every search then reads
whole, until a vacuum merges it (a manual ANALYZE does not): after 10,000 articles were
written, 433 pages of it made a common word's lookup three times slower. Articles are
read far more often than written, and an edit's entries go straight into the index in
about the time the pending list saved.

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-07 08:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0035"
down_revision: str | None = "0034"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # FTS5 finds title matches with a column filter of its own index
    op.execute(
        "CREATE INDEX ix_knowledge_articles_search_head ON knowledge_articles "
        "USING gin (search_vector_head) WITH (fastupdate = off)"
    )
    op.execute("ALTER INDEX ix_knowledge_articles_search SET (fastupdate = off)")
    # What was queued before goes into the index now, not at the next vacuum.
    op.execute("SELECT gin_clean_pending_list('ix_knowledge_articles_search'::regclass)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER INDEX ix_knowledge_articles_search RESET (fastupdate)")
        op.execute("DROP INDEX ix_knowledge_articles_search_head")
