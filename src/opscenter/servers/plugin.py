"""What the servers domain adds to the running system."""

from __future__ import annotations

from opscenter.core.background import Loop
from opscenter.core.context import AppContext
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.servers import pages
from opscenter.servers.health import run_forever
from opscenter.servers.router import router


def _health_checks(ctx: AppContext, server: bool) -> Loop | None:
    seconds = ctx.settings.health_interval_seconds
    if not server or seconds <= 0:
        return None
    return Loop("health-checks", lambda: run_forever(ctx, seconds))


def register(registry: Registry) -> None:
    registry.api(router)
    registry.background(_health_checks)
    registry.page("/servers", pages.servers_page, permission="read:servers")
    registry.nav(NavLink("Operations", "Servers", "/servers", "read:servers", rank=100))
