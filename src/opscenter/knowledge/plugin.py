"""What the knowledge base adds to the running system."""

from __future__ import annotations

from opscenter.core.context import AppContext
from opscenter.core.logging import get_logger
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.knowledge import pages, shipped
from opscenter.knowledge.router import router

log = get_logger(__name__)


class ShippedArticles:
    """Loads the articles shipped with this version at start (idempotent, by slug)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        async with self.ctx.db.write_session() as session:
            changed = await shipped.load(session)
            await session.commit()
        if changed:
            log.info("knowledge base articles loaded", count=changed)

    async def stop(self) -> None:
        return None


def register(registry: Registry) -> None:
    registry.api(router)
    registry.background(lambda ctx, server: ShippedArticles(ctx) if server else None)
    registry.page("/knowledge", pages.knowledge_page, permission="read:knowledge")
    registry.page("/knowledge/search", pages.search_partial, permission="read:knowledge")
    registry.page("/knowledge/help", pages.help_page, permission="read:knowledge")
    registry.page("/knowledge/new", pages.editor_page, permission="write:knowledge")
    registry.page("/knowledge/{article_id}", pages.article_page, permission="read:knowledge")
    registry.page("/knowledge/{article_id}/edit", pages.editor_page, permission="write:knowledge")
    registry.page(
        "/knowledge/{article_id}/history", pages.history_page, permission="read:knowledge"
    )
    registry.nav(NavLink("Operations", "Knowledge base", "/knowledge", "read:knowledge", rank=190))
