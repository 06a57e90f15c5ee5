"""What the users domain adds to the running system."""

from __future__ import annotations

from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.users import pages
from opscenter.users.router import router


def register(registry: Registry) -> None:
    registry.api(router)
    registry.page("/users", pages.users_page, permission="read:users")
    registry.nav(NavLink("Administration", "Users and teams", "/users", "read:users", rank=300))
