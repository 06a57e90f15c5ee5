"""What the security domain adds to the running system: its two API views, the report
upload, its pages, and the watch that expires acceptances and raises overdue events."""

from __future__ import annotations

import asyncio
from datetime import datetime

from opscenter.core.background import Loop
from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.logging import get_logger
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.security import import_job, pages, scan_plugin, service, threat_pages
from opscenter.security.router import secops_router, security_router
from opscenter.security.threat_router import coverage_router, fuzzing_router

log = get_logger(__name__)
WATCH_SECONDS = 60.0


async def watch_once(ctx: AppContext, now: datetime) -> service.Tick:
    """One pass of the clock at `now` (injected: tests move time, the loop uses the wall
    clock); events go out after the commit."""
    async with ctx.db.write_session() as session:
        tick = await service.tick(session, now)
        await session.commit()
    for team, ids in tick.expired.items():
        for finding_id in ids:
            ctx.events.publish(
                Event("security.acceptance_expired", {"finding_id": finding_id}, team_id=team)
            )
    for team, ids in tick.overdue.items():
        ctx.events.publish(
            Event(
                "security.finding_overdue",
                # `severity` is the level alert policies hear it at (notifications).
                {"finding_ids": ids[: service.EVENT_IDS], "count": len(ids), "severity": "warning"},
                team_id=team,
            )
        )
    return tick


def _watch(ctx: AppContext, server: bool) -> Loop | None:
    if not server or ctx.settings.scheduler_interval_seconds <= 0:
        return None

    async def forever() -> None:
        while True:
            try:
                await watch_once(ctx, utcnow())
            except Exception:
                log.exception("security watch failed")
            await asyncio.sleep(WATCH_SECONDS)

    return Loop("security-watch", forever)


def register(registry: Registry) -> None:
    registry.api(security_router)
    registry.api(secops_router)
    registry.api(coverage_router, fuzzing_router)
    # A report streams to a temp file, bounded by OPSCENTER_SECURITY_IMPORT_MAX_BYTES.
    registry.streamed_upload("/security/imports")
    registry.background(_watch)
    scan_plugin.register(registry)
    registry.wire(import_job.wire)
    registry.page("/security", pages.findings_page, permission="read:security")
    registry.page("/security/assets", pages.assets_page, permission="read:security")
    registry.page("/security/metrics", pages.metrics_page, permission="read:security")
    registry.nav(
        NavLink("Security and compliance", "Findings", "/security", "read:security", rank=210)
    )
    registry.nav(
        NavLink("Security and compliance", "Assets", "/security/assets", "read:security", rank=211)
    )
    registry.nav(
        NavLink(
            "Security and compliance",
            "Security metrics",
            "/security/metrics",
            "read:security",
            rank=212,
        )
    )
    registry.page("/security/attack", threat_pages.attack_page, permission="read:security")
    registry.page("/security/fuzzing", threat_pages.fuzzing_page, permission="read:security")
    registry.nav(
        NavLink(
            "Security and compliance",
            "ATT&CK coverage",
            "/security/attack",
            "read:security",
            rank=218,
        )
    )
    registry.nav(
        NavLink(
            "Security and compliance", "Fuzzing", "/security/fuzzing", "read:security", rank=219
        )
    )
