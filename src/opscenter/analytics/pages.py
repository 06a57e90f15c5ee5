"""The analytics page: the window's figures, a trend chart, the insights with their
dismiss buttons, and the report builder (saved reports, generate, versions, downloads)."""

from __future__ import annotations

from opscenter.analytics import dashboard, insights, reports, service
from opscenter.analytics.figures import parse_window
from opscenter.analytics.schemas import GroupBy, ReportMetric
from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.models import AnalyticsReportResult


async def analytics_page(principal: Principal, session: SessionDep) -> View:
    now = utcnow()
    period = parse_window("30d", now)
    figures = await service.metrics(session, principal, period)
    daily = await service.daily(session, principal, period)
    found = await insights.compute(session, principal, now)
    saved = (await session.scalars(reports.reports_query(principal).limit(LIST_LIMIT))).all()
    versions: dict[int, list[AnalyticsReportResult]] = {}
    for report in saved:
        rows = await session.scalars(reports.versions_query(report).limit(5))
        versions[report.id] = list(rows.all())
    return View(
        "analytics.html",
        {
            "metrics": figures,
            "daily": [d.model_dump() for d in daily],
            "insights": found,
            "reports": [reports.report_out(r) for r in saved],
            "versions": {rid: [reports.summary_out(v) for v in vs] for rid, vs in versions.items()},
            "report_metrics": list(ReportMetric),
            "group_bys": list(GroupBy),
            "can_write": principal.can("write:analytics"),
        },
    )


async def dashboard_widget(principal: Principal, session: SessionDep) -> View:
    """The dashboard's analytics panel: the week's figures, daily backups, open insights."""
    data = await dashboard.data(session, principal, utcnow())
    return View(
        "partials/analytics_widget.html",
        {
            "data": data,
            "daily": [d.model_dump() for d in data.daily],
            "can_write": principal.can("write:analytics"),
        },
    )
