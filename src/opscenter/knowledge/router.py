"""The knowledge base API (seed 002): `/knowledge-base/...`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import SessionDep, publish_after_commit
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.core.schemas import InputModel, OutputModel
from opscenter.knowledge import service
from opscenter.knowledge.render import render
from opscenter.knowledge.schemas import (
    ArticleCreate,
    ArticleDiff,
    ArticleOut,
    ArticleSummary,
    ArticleUpdate,
    CategoryOut,
    Content,
    FeedbackIn,
    FeedbackOut,
    HelpItem,
    SearchHit,
    Status,
    VersionDetail,
    VersionOut,
)
from opscenter.models import KnowledgeArticle

router = APIRouter(prefix="/knowledge-base", tags=["Knowledge base"])
ReadKnowledge = Annotated[Principal, Depends(require("read:knowledge"))]
WriteKnowledge = Annotated[Principal, Depends(require("write:knowledge"))]
Filter = Annotated[str | None, Query(max_length=100)]
VersionNumber = Annotated[int | None, Query(ge=1, le=1_000_000)]


def _announce(request: Request, action: str, article: KnowledgeArticle, **extra: object) -> None:
    """`knowledge.<action>` on the event bus (channel `knowledge`) once the change committed."""
    data = {"article_id": article.id, "title": article.title, "version": article.version, **extra}
    publish_after_commit(request, Event(f"knowledge.{action}", data, team_id=article.team_id))


@router.get("/articles", response_model=Page[ArticleSummary])
async def list_articles(
    principal: ReadKnowledge,
    session: SessionDep,
    paging: Paging,
    category: Filter = None,
    tag: Filter = None,
    status: Status | None = None,
) -> Page[ArticleSummary]:
    stmt = service.articles_query(principal, category=category, tag=tag, status=status)
    rows, total = await paginate(session, stmt, paging)
    return Page.of([service.article_summary(a) for a in rows], total, paging)


@router.post(
    "/articles",
    response_model=ArticleOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Forbidden, NotFound, Conflict, InvalidInput),
)
async def create_article(
    body: ArticleCreate, principal: WriteKnowledge, session: SessionDep, request: Request
) -> ArticleOut:
    article = await service.create_article(session, principal, body)
    await audit.record(
        session,
        action="knowledge.article.create",
        actor=principal,
        resource_type="knowledge_article",
        resource_id=article.id,
        team_id=article.team_id,
        details={"title": article.title, "slug": article.slug, "status": article.status},
        origin=origin_of(request),
    )
    _announce(request, "article_created", article)
    return await service.article_out(session, article, principal)


@router.get("/articles/{article_id}", response_model=ArticleOut, responses=responses(NotFound))
async def get_article(
    article_id: PathId, principal: ReadKnowledge, session: SessionDep
) -> ArticleOut:
    article = await service.get_article(session, principal, article_id)
    return await service.article_out(session, article, principal)


@router.put(
    "/articles/{article_id}",
    response_model=ArticleOut,
    responses=responses(Forbidden, NotFound, Conflict),
)
async def update_article(
    article_id: PathId,
    body: ArticleUpdate,
    principal: WriteKnowledge,
    session: SessionDep,
    request: Request,
) -> ArticleOut:
    """Changes the fields given; a save that changes something is a new version."""
    article, changed = await service.update_article(session, principal, article_id, body)
    if changed:
        await audit.record(
            session,
            action="knowledge.article.update",
            actor=principal,
            resource_type="knowledge_article",
            resource_id=article.id,
            team_id=article.team_id,
            details={"version": article.version, "changed": changed, "note": body.note},
            origin=origin_of(request),
        )
        _announce(request, "article_updated", article, changed=changed)
    return await service.article_out(session, article, principal)


@router.get(
    "/articles/{article_id}/versions",
    response_model=Page[VersionOut],
    responses=responses(NotFound),
)
async def list_versions(
    article_id: PathId, principal: ReadKnowledge, session: SessionDep, paging: Paging
) -> Page[VersionOut]:
    """Every saved version, newest first: who, when, which fields changed."""
    article = await service.get_article(session, principal, article_id)
    rows, total = await paginate(session, service.versions_query(article.id), paging)
    return Page.of([service.version_out(v) for v in rows], total, paging)


@router.get(
    "/articles/{article_id}/versions/{version}",
    response_model=VersionDetail,
    responses=responses(NotFound),
)
async def get_version(
    article_id: PathId,
    version: Annotated[int, Path(ge=1, le=1_000_000)],
    principal: ReadKnowledge,
    session: SessionDep,
) -> VersionDetail:
    article = await service.get_article(session, principal, article_id)
    return service.version_detail(await service.get_version(session, article.id, version))


@router.get(
    "/articles/{article_id}/diff",
    response_model=ArticleDiff,
    responses=responses(NotFound),
)
async def diff_versions(
    article_id: PathId,
    principal: ReadKnowledge,
    session: SessionDep,
    from_version: VersionNumber = None,
    to_version: VersionNumber = None,
) -> ArticleDiff:
    """What changed between two versions (default: the current one and the one before)."""
    article = await service.get_article(session, principal, article_id)
    new = to_version or article.version
    old = from_version or max(1, new - 1)
    return await service.diff(session, article.id, old, new)


@router.post(
    "/articles/{article_id}/helpful",
    response_model=FeedbackOut,
    responses=responses(NotFound),
)
async def mark_helpful(
    article_id: PathId,
    principal: ReadKnowledge,
    session: SessionDep,
    request: Request,
    body: FeedbackIn | None = None,
) -> FeedbackOut:
    """Was this helpful? Once per person (a second vote replaces the first); no body = yes."""
    helpful = True if body is None else body.helpful
    article = await service.vote(session, principal, article_id, helpful)
    await audit.record(
        session,
        action="knowledge.article.feedback",
        actor=principal,
        resource_type="knowledge_article",
        resource_id=article.id,
        team_id=article.team_id,
        details={"helpful": helpful},
        origin=origin_of(request),
    )
    counts = {"helpful_yes": article.helpful_yes, "helpful_no": article.helpful_no}
    _announce(request, "feedback", article, **counts)
    return FeedbackOut(article_id=article.id, helpful=helpful, **counts)


@router.get("/categories", response_model=Page[CategoryOut])
async def list_categories(principal: ReadKnowledge, session: SessionDep) -> Page[CategoryOut]:
    """Categories of the articles the caller can read, with their article counts."""
    return Page.whole(await service.categories(session, principal))


@router.get("/search", response_model=Page[SearchHit])
async def search(
    principal: ReadKnowledge,
    session: SessionDep,
    paging: Paging,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    category: Filter = None,
    tag: Filter = None,
) -> Page[SearchHit]:
    """Published articles ranked by relevance, with the matched words in `<mark>`. Words
    match their other forms (restore, restoring); "quoted phrases", `OR`, `-word` and
    `prefix*` are understood; no input is an error, at worst it finds nothing. For a word
    in many articles the total may be a lower bound (`total_estimated`)."""
    hits, total = await service.search_articles(
        session, principal, q, paging, category=category, tag=tag
    )
    return Page.of(hits, total, paging)


@router.get("/contextual-help", response_model=Page[HelpItem])
async def contextual_help(
    principal: ReadKnowledge,
    session: SessionDep,
    context: Annotated[str, Query(min_length=1, max_length=120)],
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> Page[HelpItem]:
    """Articles for a page (`backups` or `page:backups`), an error code (`NOT_FOUND`,
    `error:dump_failed`) or an event type (`backup.failed`): linked ones first."""
    return Page.whole(await service.contextual_help(session, principal, context, limit))


class PreviewIn(InputModel):
    content: Content


class PreviewOut(OutputModel):
    content_html: str


@router.post("/preview", response_model=PreviewOut)
async def preview(body: PreviewIn, _: WriteKnowledge) -> PreviewOut:
    """The editor's live preview: Markdown rendered and sanitized as a save would; nothing
    is stored."""
    return PreviewOut(content_html=render(body.content).html)
