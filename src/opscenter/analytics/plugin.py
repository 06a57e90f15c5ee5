"""What the analytics domain adds: its API, its page, its dashboard widget and the loop
that generates scheduled reports."""

from __future__ import annotations

import asyncio
from datetime import datetime

from opscenter.analytics import pages, reports
from opscenter.analytics.router import router
from opscenter.audit import service as audit
from opscenter.core.background import Loop
from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.logging import get_logger
from opscenter.core.pages import NavLink
from opscenter.core.principal import SYSTEM
from opscenter.core.registry import Registry

log = get_logger(__name__)
LOOP_SECONDS = 60.0


async def generate_due(ctx: AppContext, now: datetime) -> list[tuple[int, int]]:
    """Generate the scheduled reports whose slot has come (`now` injected: tests move
    time); (report id, version) of each, announced after the commit."""
    done: list[tuple[int, int, int]] = []
    async with ctx.db.write_session() as session:
        for report in await reports.due(session, now):
            result = await reports.generate(session, report, trigger="schedule", by=None, now=now)
            await audit.record(
                session,
                action="analytics.report_generate",
                actor=SYSTEM,
                resource_type="analytics_report",
                resource_id=report.id,
                details={
                    "version": result.version,
                    "rows": len(result.rows),
                    "trigger": "schedule",
                },
                team_id=report.team_id,
            )
            done.append((report.id, result.version, report.team_id))
        await session.commit()
    for report_id, version, team in done:
        log.info("analytics report %s generated on schedule: version %s", report_id, version)
        ctx.events.publish(
            Event("analytics.report_generated", {"id": report_id, "version": version}, team_id=team)
        )
    return [(r, v) for r, v, _ in done]


def _scheduled(ctx: AppContext, server: bool) -> Loop | None:
    if not server or ctx.settings.scheduler_interval_seconds <= 0:
        return None

    async def forever() -> None:
        while True:
            try:
                await generate_due(ctx, utcnow())
            except Exception:
                log.exception("scheduled analytics reports failed")
            await asyncio.sleep(LOOP_SECONDS)

    return Loop("analytics-reports", forever)


def register(registry: Registry) -> None:
    registry.api(router)
    registry.background(_scheduled)
    registry.page("/analytics", pages.analytics_page, permission="read:analytics")
    registry.widget(pages.dashboard_widget, permission="read:analytics", rank=10)
    registry.nav(NavLink("Operations", "Analytics", "/analytics", "read:analytics", rank=160))
