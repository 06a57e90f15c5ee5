"""What the tokens domain adds to the running system."""

from __future__ import annotations

from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.tokens import pages
from opscenter.tokens.router import router


def register(registry: Registry) -> None:
    registry.api(router)
    registry.page("/tokens", pages.tokens_page, permission="read:tokens")
    registry.nav(NavLink("Administration", "API tokens", "/tokens", "read:tokens", rank=310))
