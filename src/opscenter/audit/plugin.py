"""What the audit domain adds to the running system."""

from __future__ import annotations

from opscenter.audit import checkpoints, pages
from opscenter.audit.router import router
from opscenter.core.background import Loop
from opscenter.core.context import AppContext
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry


def _checkpoints(ctx: AppContext, server: bool) -> Loop | None:
    seconds = ctx.settings.audit_checkpoint_interval_seconds
    if not server or seconds <= 0:
        return None
    return Loop("audit-checkpoints", lambda: checkpoints.run_forever(ctx.db, seconds))


def register(registry: Registry) -> None:
    registry.api(router)
    registry.background(_checkpoints)
    registry.page("/audit", pages.audit_page, permission="read:audit")
    registry.nav(NavLink("Security and compliance", "Audit log", "/audit", "read:audit", rank=200))
