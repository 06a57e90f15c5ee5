"""What the reports domain adds to the running system: its API, the `report` job and the
Reports page."""

from __future__ import annotations

from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.reports import pages
from opscenter.reports.jobs import ReportJobs
from opscenter.reports.router import router


def register(registry: Registry) -> None:
    registry.api(router)
    registry.wire(lambda ctx: ReportJobs(ctx).register())
    registry.page("/reports", pages.reports_page, permission="read:reports")
    registry.nav(
        NavLink("Security and compliance", "Reports", "/reports", "read:reports", rank=230)
    )
