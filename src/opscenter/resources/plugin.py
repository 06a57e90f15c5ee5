"""What the resources domain adds to the running system."""

from __future__ import annotations

from opscenter.core.background import Loop
from opscenter.core.context import AppContext
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.resources import pages
from opscenter.resources.jobs import register_jobs, run_forever
from opscenter.resources.router import COLLECT_JOB, router


def _collection(ctx: AppContext, server: bool) -> Loop | None:
    seconds = ctx.settings.resources_interval_seconds
    if not server or seconds <= 0:
        return None
    return Loop("resource-collection", lambda: run_forever(ctx, seconds))


def register(registry: Registry) -> None:
    registry.api(router)
    registry.wire(lambda ctx: register_jobs(ctx, COLLECT_JOB))
    registry.background(_collection)
    registry.page("/resources", pages.overview_page, permission="read:resources")
    registry.page("/resources/graphs", pages.graphs_page, permission="read:resources")
    registry.page("/resources/alerts", pages.alerts_page, permission="read:resources")
    registry.page("/resources/capacity", pages.capacity_page, permission="read:resources")
    registry.nav(NavLink("Operations", "Infrastructure", "/resources", "read:resources", rank=150))
    registry.nav(
        NavLink("Operations", "Host graphs", "/resources/graphs", "read:resources", rank=151)
    )
    registry.nav(
        NavLink("Operations", "Resource alerts", "/resources/alerts", "read:resources", rank=152)
    )
    registry.nav(
        NavLink("Operations", "Capacity", "/resources/capacity", "read:resources", rank=153)
    )
