"""What the schedules domain adds to the running system."""

from __future__ import annotations

from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.schedules import pages
from opscenter.schedules.router import policies_router, router
from opscenter.schedules.scheduler import Scheduler


def register(registry: Registry) -> None:
    registry.api(router, policies_router)
    # Only the server runs the loop: a short-lived CLI process must not claim slots whose
    # jobs it would not live to run.
    registry.background(lambda ctx, server: Scheduler(ctx) if server else None)
    registry.page("/schedules", pages.schedules_page, permission="read:schedules")
    registry.page("/schedules/preview", pages.schedule_preview_partial, permission="read:schedules")
    registry.nav(NavLink("Backups", "Schedules", "/schedules", "read:schedules", rank=20))
    registry.page("/retention", pages.retention_page, permission="read:retention")
    registry.nav(NavLink("Backups", "Retention", "/retention", "read:retention", rank=40))
