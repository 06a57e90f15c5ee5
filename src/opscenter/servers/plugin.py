"""What the servers domain adds to the running system."""

from __future__ import annotations

from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.servers.router import router


def register(registry: Registry) -> None:
    registry.api(router)
    registry.nav(NavLink("Operations", "Servers", "/servers", "read:servers", rank=100))
