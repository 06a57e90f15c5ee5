"""The knowledge base pages: search as you type, articles, the editor with live preview,
version history with diffs, and contextual help."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.pagination import PageParams, PathId
from opscenter.core.principal import Principal
from opscenter.knowledge import service
from opscenter.knowledge.schemas import SearchHit

SearchText = Annotated[str, Query(max_length=500)]
Filter = Annotated[str, Query(max_length=100)]
VersionNumber = Annotated[int | None, Query(ge=1, le=1_000_000)]


async def knowledge_page(
    principal: Principal, session: SessionDep, q: SearchText = "", category: Filter = ""
) -> View:
    stmt = service.articles_query(principal, category=category or None).limit(LIST_LIMIT)
    articles = [service.article_summary(a) for a in await session.scalars(stmt)]
    hits: list[SearchHit] = []
    total = 0
    if q.strip():
        hits, total = await service.search_articles(
            session, principal, q, PageParams(limit=20, offset=0), category=category or None
        )
    return View(
        "knowledge.html",
        {
            "articles": articles,
            "categories": await service.categories(session, principal),
            "q": q,
            "category": category,
            "hits": hits,
            "total": total,
        },
    )


async def search_partial(
    principal: Principal, session: SessionDep, q: SearchText = "", category: Filter = ""
) -> View:
    """The results under the search box, as the person types (the last word as a prefix)."""
    hits: list[SearchHit] = []
    total = 0
    if q.strip():
        hits, total = await service.search_articles(
            session,
            principal,
            q,
            PageParams(limit=20, offset=0),
            category=category or None,
            prefix_last=True,
        )
    return View("partials/knowledge_hits.html", {"hits": hits, "total": total, "q": q})


async def article_page(principal: Principal, session: SessionDep, article_id: PathId) -> View:
    article = await service.get_article(session, principal, article_id)
    return View(
        "knowledge_article.html",
        {
            "article": await service.article_out(session, article, principal),
            "editable": principal.can(service.EDIT)
            and (article.team_id is not None or principal.sees_all_teams),
        },
    )


async def editor_page(
    principal: Principal, session: SessionDep, article_id: PathId | None = None
) -> View:
    article = None
    if article_id is not None:
        found = await service.get_article(session, principal, article_id)
        service.check_editable(principal, found)
        article = await service.article_out(session, found, principal)
    return View(
        "knowledge_editor.html",
        {
            "article": article,
            "categories": await service.categories(session, principal),
        },
    )


async def history_page(
    principal: Principal,
    session: SessionDep,
    article_id: PathId,
    from_version: VersionNumber = None,
    to_version: VersionNumber = None,
) -> View:
    article = await service.get_article(session, principal, article_id)
    versions = await session.scalars(service.versions_query(article.id).limit(LIST_LIMIT))
    new = to_version or article.version
    old = from_version or max(1, new - 1)
    diff = await service.diff(session, article.id, old, new) if article.version > 1 else None
    return View(
        "knowledge_history.html",
        {
            "article": service.article_summary(article),
            "versions": [service.version_out(v) for v in versions],
            "diff": diff,
        },
    )


async def help_page(
    principal: Principal, session: SessionDep, context: Annotated[str, Query(max_length=120)] = ""
) -> View:
    items = await service.contextual_help(session, principal, context, 10) if context else []
    return View("knowledge_help.html", {"context": context, "items": items})
