"""What the storage domain adds to the running system."""

from __future__ import annotations

from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.storage import pages
from opscenter.storage.router import router


def register(registry: Registry) -> None:
    registry.api(router)
    registry.page("/storage", pages.storage_page, permission="read:storage")
    registry.nav(NavLink("Backups", "Storage", "/storage", "read:storage", rank=50))
