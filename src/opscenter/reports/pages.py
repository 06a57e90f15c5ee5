"""The Reports page: the reports of the caller's teams with their versions, and a form to
generate one (kind, period, format) whose job's progress is followed in the page."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep
from opscenter.core.pages import View
from opscenter.core.principal import Principal
from opscenter.models import ReportVersion, Team
from opscenter.reports import service
from opscenter.reports.kinds import KINDS

#: The page shows the most recently generated reports, each with its newest versions.
PAGE_REPORTS = 50
VERSIONS_SHOWN = 10


async def reports_page(principal: Principal, session: SessionDep) -> View:
    reports = (await session.scalars(service.reports_query(principal).limit(PAGE_REPORTS))).all()
    versions: dict[int, list[ReportVersion]] = {r.id: [] for r in reports}
    if reports:
        rows = await session.scalars(
            select(ReportVersion)
            .where(ReportVersion.report_id.in_(versions))
            .order_by(ReportVersion.report_id, ReportVersion.version.desc())
        )
        for v in rows:
            if len(versions[v.report_id]) < VERSIONS_SHOWN:
                versions[v.report_id].append(v)
    teams = select(Team.id, Team.name).order_by(Team.name)
    if not principal.sees_all_teams:
        teams = teams.where(Team.id.in_(principal.team_ids))
    last_month = (utcnow().date().replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    return View(
        "reports.html",
        {
            "reports": [
                (service.report_out(r, None), [service.version_out(v) for v in versions[r.id]])
                for r in reports
            ],
            "kinds": list(KINDS.values()),
            "teams": (await session.execute(teams)).all(),
            "default_period": last_month,
        },
    )
