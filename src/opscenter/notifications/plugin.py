"""What the notifications domain adds to the running system."""

from __future__ import annotations

from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.notifications import pages
from opscenter.notifications.dispatch import NotificationDispatcher
from opscenter.notifications.router import router


def register(registry: Registry) -> None:
    registry.api(router)
    # Alerts from this process's own events (a CLI backup that fails alerts too).
    registry.background(lambda ctx, _: NotificationDispatcher(ctx), outlives_jobs=True)
    registry.page("/notifications", pages.notifications_page, permission="read:notifications")
    registry.page("/notifications/inbox", pages.inbox_partial, permission="read:notifications")
    registry.nav(
        NavLink(
            "Operations",
            "Notifications",
            "/notifications",
            "read:notifications",
            rank=110,
            badge_id="nav-unread",
        )
    )
