"""What the compliance domain adds to the running system: its API under `/audit` and its
pages."""

from __future__ import annotations

from opscenter.compliance import pages
from opscenter.compliance.router import router
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry


def register(registry: Registry) -> None:
    registry.api(router)
    registry.page("/compliance", pages.overview_page, permission="read:compliance")
    registry.page("/compliance/{framework_id}", pages.framework_page, permission="read:compliance")
    registry.nav(
        NavLink("Security and compliance", "Compliance", "/compliance", "read:compliance", rank=220)
    )
