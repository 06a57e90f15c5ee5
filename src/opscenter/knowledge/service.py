"""Knowledge base articles: write with versions, links and the search index in one
transaction; read them team-scoped (shared articles to everyone, drafts to editors)."""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import utcnow
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from opscenter.core.pagination import PageParams
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access
from opscenter.knowledge import search
from opscenter.knowledge.render import render
from opscenter.knowledge.schemas import (
    ArticleCreate,
    ArticleDiff,
    ArticleLinks,
    ArticleOut,
    ArticleSummary,
    ArticleUpdate,
    CategoryOut,
    FieldChange,
    HelpItem,
    LinksOut,
    SearchHit,
    VersionDetail,
    VersionOut,
)
from opscenter.models import (
    KnowledgeArticle,
    KnowledgeFeedback,
    KnowledgeLink,
    KnowledgeTag,
    KnowledgeVersion,
    Team,
)

EDIT = "write:knowledge"
SHIPPED_AUTHOR = "opscenter"
#: The link kinds, and the ArticleLinks field each one fills.
LINK_FIELDS = {
    "runbook": "runbook_ids",
    "incident": "incident_ids",
    "error_code": "error_codes",
    "page": "pages",
    "event": "events",
}
_VERSIONED = ("title", "summary", "category", "tags", "content", "status", "links")


# --- reading ----------------------------------------------------------------------------


def visible(principal: Principal) -> list[ColumnElement[bool]]:
    """Shared articles and the caller's teams' ones; drafts only for those who edit."""
    conditions: list[ColumnElement[bool]] = []
    if not principal.sees_all_teams:
        conditions.append(
            or_(
                KnowledgeArticle.team_id.is_(None),
                KnowledgeArticle.team_id.in_(principal.team_ids),
            )
        )
    if not principal.can(EDIT):
        conditions.append(KnowledgeArticle.status == "published")
    return conditions


def _filters(category: str | None, tag: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if category:
        conditions.append(func.lower(KnowledgeArticle.category) == category.lower())
    if tag:
        tagged = select(KnowledgeTag.article_id).where(KnowledgeTag.tag == tag.lower())
        conditions.append(KnowledgeArticle.id.in_(tagged))
    return conditions


def articles_query(
    principal: Principal,
    *,
    category: str | None = None,
    tag: str | None = None,
    status: str | None = None,
) -> Select[Any]:
    stmt = select(KnowledgeArticle).where(*visible(principal), *_filters(category, tag))
    if status:
        stmt = stmt.where(KnowledgeArticle.status == status)
    return stmt.order_by(KnowledgeArticle.category, KnowledgeArticle.title, KnowledgeArticle.id)


async def get_article(
    session: AsyncSession, principal: Principal, article_id: int
) -> KnowledgeArticle:
    article = await session.scalar(
        select(KnowledgeArticle).where(KnowledgeArticle.id == article_id, *visible(principal))
    )
    if article is None:
        raise NotFound("Article", article_id)
    return article


async def get_by_slug(session: AsyncSession, principal: Principal, slug: str) -> KnowledgeArticle:
    article = await session.scalar(
        select(KnowledgeArticle).where(KnowledgeArticle.slug == slug, *visible(principal))
    )
    if article is None:
        raise NotFound("Article", slug)
    return article


async def links_of(session: AsyncSession, article_ids: Iterable[int]) -> dict[int, LinksOut]:
    found: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    rows = await session.execute(
        select(KnowledgeLink.article_id, KnowledgeLink.kind, KnowledgeLink.target)
        .where(KnowledgeLink.article_id.in_(list(article_ids)))
        .order_by(KnowledgeLink.kind, KnowledgeLink.target)
    )
    for article_id, kind, target in rows:
        field = LINK_FIELDS[kind]
        found[article_id][field].append(int(target) if field.endswith("_ids") else target)
    return {
        article_id: LinksOut(**{f: sorted(found[article_id][f]) for f in LINK_FIELDS.values()})
        for article_id in article_ids
    }


def article_summary(article: KnowledgeArticle) -> ArticleSummary:
    return ArticleSummary(
        id=article.id,
        slug=article.slug,
        title=article.title,
        summary=article.summary,
        category=article.category,
        tags=article.tags,
        status=article.status,
        version=article.version,
        team_id=article.team_id,
        shared=article.team_id is None,
        source=article.source,
        author=article.author,
        helpful_yes=article.helpful_yes,
        helpful_no=article.helpful_no,
        created_at=article.created_at,
        updated_at=article.updated_at,
        published_at=article.published_at,
    )


async def article_out(
    session: AsyncSession, article: KnowledgeArticle, principal: Principal | None = None
) -> ArticleOut:
    links = (await links_of(session, [article.id]))[article.id]
    vote = None
    if principal is not None:
        vote = await session.scalar(
            select(KnowledgeFeedback.helpful).where(
                KnowledgeFeedback.article_id == article.id,
                KnowledgeFeedback.user_id == principal.user_id,
            )
        )
    return ArticleOut(
        **article_summary(article).model_dump(),
        content=article.body,
        content_html=article.body_html,
        links=links,
        my_vote=vote,
    )


async def categories(session: AsyncSession, principal: Principal) -> list[CategoryOut]:
    rows = await session.execute(
        select(KnowledgeArticle.category, func.count())
        .where(*visible(principal))
        .group_by(KnowledgeArticle.category)
        .order_by(KnowledgeArticle.category)
    )
    return [CategoryOut(name=name, article_count=count) for name, count in rows]


async def tags(session: AsyncSession, principal: Principal) -> list[str]:
    rows = await session.scalars(
        select(KnowledgeTag.tag)
        .join(KnowledgeArticle, KnowledgeArticle.id == KnowledgeTag.article_id)
        .where(*visible(principal))
        .distinct()
        .order_by(KnowledgeTag.tag)
    )
    return list(rows)


async def search_articles(
    session: AsyncSession,
    principal: Principal,
    q: str,
    page: PageParams,
    *,
    category: str | None = None,
    tag: str | None = None,
    prefix_last: bool = False,
) -> tuple[list[SearchHit], int]:
    """Published articles matching `q`, best first, with highlighted snippets."""
    teams = None if principal.sees_all_teams else principal.team_ids
    scope = search.Scope(teams, category=category or None, tag=tag or None)
    found, total = await search.hits(session, search.parse(q, prefix_last=prefix_last), scope, page)
    return [
        SearchHit(
            id=hit.article_id,
            slug=hit.article.slug,
            title=hit.article.title,
            title_html=hit.title,
            summary=hit.article.summary,
            snippet_html=hit.snippet,
            category=hit.article.category,
            tags=hit.article.tags,
            score=round(hit.score, 6),
            updated_at=hit.article.updated_at,
        )
        for hit in found
    ], total


_CONTEXT_KINDS = {"page": ("page",), "error": ("error_code",), "event": ("event",)}


async def contextual_help(
    session: AsyncSession, principal: Principal, context: str, limit: int
) -> list[HelpItem]:
    """Articles linked to a page key, an error code or an event type (`page:backups`,
    `error:NOT_FOUND`, `event:backup.failed`, or the bare key), then the best search
    matches of its words to fill up to `limit`."""
    kind, _, key = context.partition(":") if ":" in context else ("", "", context)
    key = key.strip().lower()
    kinds = _CONTEXT_KINDS.get(kind, ("page", "error_code", "event"))
    links = select(KnowledgeLink.article_id).where(
        KnowledgeLink.kind.in_(kinds), KnowledgeLink.target == key
    )
    linked = (
        await session.scalars(
            select(KnowledgeArticle)
            .where(
                KnowledgeArticle.id.in_(links),
                KnowledgeArticle.status == "published",
                *visible(principal),
            )
            .order_by(KnowledgeArticle.title)
            .limit(limit)
        )
    ).all()
    items = [HelpItem(**article_summary(a).model_dump(), matched_by="link") for a in linked]
    if len(items) < limit and key:
        # Any of the context's words: "backup.failed" asks for backups or failures.
        words = " OR ".join(re.findall(r"[^\W_]+", key))
        hits, _ = await search_articles(
            session, principal, words, PageParams(limit=limit, offset=0)
        )
        seen = {item.id for item in items}
        extra = [h.id for h in hits if h.id not in seen][: limit - len(items)]
        rows = {
            a.id: a
            for a in await session.scalars(
                select(KnowledgeArticle).where(KnowledgeArticle.id.in_(extra))
            )
        }
        items += [
            HelpItem(**article_summary(rows[i]).model_dump(), matched_by="search") for i in extra
        ]
    return items


# --- versions -----------------------------------------------------------------------------


def version_out(version: KnowledgeVersion) -> VersionOut:
    return VersionOut(
        version=version.version,
        title=version.title,
        status=version.status,
        changed=version.changed,
        note=version.note,
        author=version.author,
        user_id=version.user_id,
        created_at=version.created_at,
    )


def version_detail(version: KnowledgeVersion) -> VersionDetail:
    return VersionDetail(
        **version_out(version).model_dump(),
        summary=version.summary,
        category=version.category,
        tags=version.tags,
        content=version.body,
        links=LinksOut(**{f: version.links.get(f, []) for f in LINK_FIELDS.values()}),
    )


def versions_query(article_id: int) -> Select[Any]:
    return (
        select(KnowledgeVersion)
        .where(KnowledgeVersion.article_id == article_id)
        .order_by(KnowledgeVersion.version.desc())
    )


async def get_version(session: AsyncSession, article_id: int, number: int) -> KnowledgeVersion:
    version = await session.scalar(
        select(KnowledgeVersion).where(
            KnowledgeVersion.article_id == article_id, KnowledgeVersion.version == number
        )
    )
    if version is None:
        raise NotFound(f"Version {number} of article", article_id)
    return version


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_as_text(v)}" for k, v in sorted(value.items()) if v)
    return str(value)


async def diff(session: AsyncSession, article_id: int, old: int, new: int) -> ArticleDiff:
    before, after = (
        await get_version(session, article_id, old),
        await get_version(session, article_id, new),
    )
    changes = [
        FieldChange(
            field=name, before=_as_text(getattr(before, name)), after=_as_text(getattr(after, name))
        )
        for name in ("title", "summary", "category", "tags", "status", "links")
        if getattr(before, name) != getattr(after, name)
    ]
    lines = list(
        difflib.unified_diff(
            before.body.splitlines(),
            after.body.splitlines(),
            fromfile=f"version {old}",
            tofile=f"version {new}",
            lineterm="",
        )
    )
    body = [ln for ln in lines if not ln.startswith(("---", "+++"))]
    return ArticleDiff(
        article_id=article_id,
        from_version=old,
        to_version=new,
        changes=changes,
        content_diff="\n".join(lines),
        lines_added=sum(ln.startswith("+") for ln in body),
        lines_removed=sum(ln.startswith("-") for ln in body),
    )


# --- writing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Author:
    user_id: int | None
    name: str

    @classmethod
    def of(cls, principal: Principal) -> Author:
        return cls(None if principal.is_system else principal.user_id, principal.username)


def _links_dict(links: ArticleLinks) -> dict[str, list[Any]]:
    return {f: sorted(set(getattr(links, f))) for f in LINK_FIELDS.values()}


def slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:80].strip("-") or "article"


async def _free_slug(session: AsyncSession, wanted: str | None, title: str) -> str:
    taken = select(KnowledgeArticle.id)
    if wanted is not None:
        if await session.scalar(taken.where(KnowledgeArticle.slug == wanted)):
            raise Conflict(f"An article with the slug '{wanted}' exists; choose another slug")
        return wanted
    base = slugify(title)
    slug, n = base, 1
    while await session.scalar(taken.where(KnowledgeArticle.slug == slug)):
        n += 1
        slug = f"{base}-{n}"
    return slug


def index_values(article: KnowledgeArticle) -> dict[str, Any] | None:
    if article.status != "published":
        return None  # search finds published articles only
    return {
        "title": article.title,
        "summary": article.summary,
        "tags": " ".join(article.tags),
        "body": article.body_text,
        "facets": search.facets_of(article.team_id, article.category, article.tags),
    }


async def _write_related(
    session: AsyncSession, article: KnowledgeArticle, links: dict[str, list[Any]] | None
) -> None:
    await session.execute(delete(KnowledgeTag).where(KnowledgeTag.article_id == article.id))
    session.add_all(KnowledgeTag(article_id=article.id, tag=t) for t in article.tags)
    if links is not None:
        await session.execute(delete(KnowledgeLink).where(KnowledgeLink.article_id == article.id))
        session.add_all(
            KnowledgeLink(article_id=article.id, kind=kind, target=str(target))
            for kind, field in LINK_FIELDS.items()
            for target in links[field]
        )
    await session.flush()
    await search.reindex(session, article.id, index_values(article))


def _set_content(article: KnowledgeArticle, content: str) -> None:
    rendered = render(content)
    article.body, article.body_html, article.body_text = content, rendered.html, rendered.text


async def _add_version(
    session: AsyncSession,
    article: KnowledgeArticle,
    links: dict[str, list[Any]],
    author: Author,
    changed: Sequence[str],
    note: str,
) -> None:
    session.add(
        KnowledgeVersion(
            article_id=article.id,
            version=article.version,
            title=article.title,
            summary=article.summary,
            category=article.category,
            tags=list(article.tags),
            body=article.body,
            status=article.status,
            links=links,
            changed=list(changed),
            note=note,
            author=author.name,
            user_id=author.user_id,
            created_at=article.updated_at,
        )
    )
    await session.flush()


async def add_article(
    session: AsyncSession,
    data: ArticleCreate,
    author: Author,
    team_id: int | None,
    *,
    source: str = "user",
    shipped_hash: str | None = None,
) -> KnowledgeArticle:
    now = utcnow()
    article = KnowledgeArticle(
        team_id=team_id,
        slug=await _free_slug(session, data.slug, data.title),
        title=data.title,
        summary=data.summary,
        category=data.category,
        tags=sorted(set(data.tags)),
        status=data.status,
        version=1,
        source=source,
        shipped_hash=shipped_hash,
        author=author.name,
        created_by=author.user_id,
        updated_by=author.user_id,
        published_at=now if data.status == "published" else None,
        created_at=now,
        updated_at=now,
    )
    _set_content(article, data.content)
    session.add(article)
    await session.flush()
    links = _links_dict(data.links)
    await _write_related(session, article, links)
    await _add_version(session, article, links, author, ["created"], data.note)
    return article


async def create_article(
    session: AsyncSession, principal: Principal, data: ArticleCreate
) -> KnowledgeArticle:
    if data.shared:
        if data.team_id is not None:
            raise InvalidInput("Give team_id or shared, not both")
        if not principal.sees_all_teams:
            raise Forbidden("Only an admin can share an article with every team; leave shared out")
        team_id = None
    else:
        team_id = data.team_id or min(principal.team_ids, default=None)
        if team_id is None:
            raise InvalidInput("You belong to no team; give team_id or ask an admin to add you")
        check_team_access(principal, team_id)
        if await session.get(Team, team_id) is None:
            raise NotFound("Team", team_id)
    return await add_article(session, data, Author.of(principal), team_id)


def check_editable(principal: Principal, article: KnowledgeArticle) -> None:
    if article.team_id is None and not principal.sees_all_teams:
        raise Forbidden(
            "This article is shared with every team and only admins edit it; "
            "write a team article that links to it instead"
        )


async def apply_update(
    session: AsyncSession, article: KnowledgeArticle, data: ArticleUpdate, author: Author
) -> list[str]:
    """Apply the given fields; a new version when anything changed. The names changed."""
    if data.expected_version is not None and data.expected_version != article.version:
        raise Conflict(
            f"Version {article.version} was saved after the version {data.expected_version} "
            "you edited; reload the article, merge your changes and save again"
        )
    current_links = _links_dict(
        ArticleLinks(**(await links_of(session, [article.id]))[article.id].model_dump())
    )
    wanted: dict[str, Any] = {
        "title": data.title,
        "summary": data.summary,
        "category": data.category,
        "tags": sorted(set(data.tags)) if data.tags is not None else None,
        "status": data.status,
    }
    changed = [k for k, v in wanted.items() if v is not None and v != getattr(article, k)]
    if data.content is not None and data.content != article.body:
        changed.append("content")
    links = _links_dict(data.links) if data.links is not None else current_links
    if links != current_links:
        changed.append("links")
    if not changed:
        return []
    for name in changed:
        if name in wanted:
            setattr(article, name, wanted[name])
    if "content" in changed:
        assert data.content is not None
        _set_content(article, data.content)
    if article.status == "published" and article.published_at is None:
        article.published_at = utcnow()
    article.version += 1
    article.updated_by = author.user_id
    article.updated_at = utcnow()
    await session.flush()
    await _write_related(session, article, links if "links" in changed else None)
    await _add_version(
        session, article, links, author, [c for c in _VERSIONED if c in changed], data.note
    )
    return changed


async def update_article(
    session: AsyncSession, principal: Principal, article_id: int, data: ArticleUpdate
) -> tuple[KnowledgeArticle, list[str]]:
    article = await get_article(session, principal, article_id)
    check_editable(principal, article)
    changed = await apply_update(session, article, data, Author.of(principal))
    return article, changed


async def vote(
    session: AsyncSession, principal: Principal, article_id: int, helpful: bool
) -> KnowledgeArticle:
    """One vote per person and article; a second one replaces the first."""
    article = await get_article(session, principal, article_id)
    feedback = await session.get(KnowledgeFeedback, (article.id, principal.user_id))
    if feedback is None:
        session.add(
            KnowledgeFeedback(article_id=article.id, user_id=principal.user_id, helpful=helpful)
        )
    else:
        feedback.helpful = helpful
    await session.flush()
    rows = await session.execute(
        select(KnowledgeFeedback.helpful, func.count())
        .where(KnowledgeFeedback.article_id == article.id)
        .group_by(KnowledgeFeedback.helpful)
    )
    counts = {helpful: count for helpful, count in rows}
    article.helpful_yes, article.helpful_no = counts.get(True, 0), counts.get(False, 0)
    await session.flush()
    return article
