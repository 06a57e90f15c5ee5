"""What the notifications domain adds to the running system."""

from __future__ import annotations

from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.notifications.router import router


def register(registry: Registry) -> None:
    registry.api(router)
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
