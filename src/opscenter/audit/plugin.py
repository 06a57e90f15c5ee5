"""What the audit domain adds to the running system."""

from __future__ import annotations

from opscenter.audit import pages
from opscenter.audit.router import router
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry


def register(registry: Registry) -> None:
    registry.api(router)
    registry.page("/audit", pages.audit_page, permission="read:audit")
    registry.nav(NavLink("Security and compliance", "Audit log", "/audit", "read:audit", rank=200))
