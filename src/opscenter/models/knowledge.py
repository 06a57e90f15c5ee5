"""Knowledge base: Markdown articles with every version kept, their links (runbooks,
incidents, error codes, pages, event types), tags and people's helpful votes.

The full-text index is not mapped here: on SQLite it is the FTS5 table `knowledge_fts`
(kept in sync by `knowledge.service`), on PostgreSQL the generated `search_vector` column
of `knowledge_articles` with its GIN index (both made by migration 0018, and left
alone by schema comparisons: `models.base.UNMAPPED_PREFIXES`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.core.clock import utcnow
from opscenter.models.base import Base, IdMixin, TimestampMixin


class KnowledgeArticle(IdMixin, TimestampMixin, Base):
    """The current version of an article. `team_id` NULL: shared with every team (the
    articles shipped with opscenter, and those an admin writes for everyone)."""

    __tablename__ = "knowledge_articles"
    __table_args__ = (
        Index("ix_knowledge_articles_status_category", "status", "category"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int | None] = mapped_column(
        ForeignKey("teams.id", ondelete="RESTRICT"), index=True
    )
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(String(1000), default="")
    category: Mapped[str] = mapped_column(String(100))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    body: Mapped[str] = mapped_column(Text)  # Markdown, as written
    body_html: Mapped[str] = mapped_column(Text)  # rendered and sanitized
    body_text: Mapped[str] = mapped_column(Text)  # plain text, what the index reads
    status: Mapped[str] = mapped_column(String(16))  # draft | published
    version: Mapped[int] = mapped_column(default=1)
    #: shipped: loaded from the package's Markdown files; user: written here.
    source: Mapped[str] = mapped_column(String(16), default="user")
    #: sha256 of the shipped file last loaded, so a start loads only what changed.
    shipped_hash: Mapped[str | None] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    published_at: Mapped[datetime | None]
    helpful_yes: Mapped[int] = mapped_column(default=0)
    helpful_no: Mapped[int] = mapped_column(default=0)


class KnowledgeVersion(IdMixin, Base):
    """One saved state of an article: who, when, which fields changed, and the whole
    content, so any two versions can be compared."""

    __tablename__ = "knowledge_versions"
    __table_args__ = (
        UniqueConstraint("article_id", "version"),
        {"sqlite_autoincrement": True},
    )

    article_id: Mapped[int] = mapped_column(ForeignKey("knowledge_articles.id", ondelete="CASCADE"))
    version: Mapped[int]
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(String(1000), default="")
    category: Mapped[str] = mapped_column(String(100))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    links: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    changed: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(String(500), default="")
    author: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class KnowledgeLink(Base):
    """What an article is about: a runbook, an incident, an error code, a page of the UI
    or an event type (`kind`), found again by contextual help."""

    __tablename__ = "knowledge_links"
    __table_args__ = (Index("ix_knowledge_links_target", "kind", "target"),)

    article_id: Mapped[int] = mapped_column(
        ForeignKey("knowledge_articles.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    target: Mapped[str] = mapped_column(String(100), primary_key=True)


class KnowledgeTag(Base):
    """An article's tags, one row each, for the tag filter of lists and search."""

    __tablename__ = "knowledge_tags"
    __table_args__ = (Index("ix_knowledge_tags_tag", "tag"),)

    article_id: Mapped[int] = mapped_column(
        ForeignKey("knowledge_articles.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(50), primary_key=True)


class KnowledgeFeedback(Base):
    """One person's "was this helpful?": once per user and article, changeable."""

    __tablename__ = "knowledge_feedback"

    article_id: Mapped[int] = mapped_column(
        ForeignKey("knowledge_articles.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    helpful: Mapped[bool]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
