"""The articles shipped with opscenter: Markdown files in `articles/`, each with a YAML
front matter (slug, title, summary, category, tags, links), loaded at start by their slug.

Loading is idempotent: a file whose content hash is the one last loaded is skipped; a
changed file becomes a new version, unless a person edited the article since (their edit
wins; the history shows both)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.logging import get_logger
from opscenter.knowledge import service
from opscenter.knowledge.schemas import ArticleCreate, ArticleLinks, ArticleUpdate
from opscenter.models import KnowledgeArticle

ARTICLES_DIR = Path(__file__).resolve().parent / "articles"
log = get_logger(__name__)


@dataclass(frozen=True)
class ShippedArticle:
    article: ArticleCreate
    sha256: str
    path: Path


def parse(path: Path) -> ShippedArticle:
    raw = path.read_text(encoding="utf-8")
    _, front, body = raw.split("---\n", 2)
    meta: dict[str, Any] = yaml.safe_load(front)
    links = {k: meta.pop(k) for k in ("error_codes", "pages", "events") if k in meta}
    article = ArticleCreate(
        **meta,
        content=body.strip() + "\n",
        status="published",
        shared=True,
        links=ArticleLinks(**links),
    )
    return ShippedArticle(article, hashlib.sha256(raw.encode()).hexdigest(), path)


@cache
def shipped_articles() -> tuple[ShippedArticle, ...]:
    return tuple(parse(p) for p in sorted(ARTICLES_DIR.glob("*.md")))


async def load(session: AsyncSession) -> int:
    """Bring the shipped articles into the database; the number added or updated."""
    author = service.Author(None, service.SHIPPED_AUTHOR)
    existing = {
        a.slug: a
        for a in await session.scalars(
            select(KnowledgeArticle).where(
                KnowledgeArticle.slug.in_([s.article.slug for s in shipped_articles()])
            )
        )
    }
    count = 0
    for item in shipped_articles():
        data = item.article
        current = existing.get(data.slug or "")
        if current is None:
            await service.add_article(
                session, data, author, None, source="shipped", shipped_hash=item.sha256
            )
        elif current.source != "shipped" or current.shipped_hash == item.sha256:
            continue
        elif current.updated_by is None:  # nobody edited it here: take the new text
            update = ArticleUpdate(
                **data.model_dump(include={"title", "summary", "category", "tags", "content"}),
                links=data.links,
                note="Updated with opscenter",
            )
            await service.apply_update(session, current, update, author)
            current.shipped_hash = item.sha256
        else:
            log.info("shipped article edited here; keeping the edit", slug=current.slug)
            continue
        count += 1
    await session.flush()
    return count
