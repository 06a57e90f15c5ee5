"""The dead man's switch: every few seconds, raise `external_job.overdue` for each
external job whose next report is late, once per overdue period."""

from __future__ import annotations

import asyncio
from datetime import datetime

from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.logging import get_logger
from opscenter.external_jobs import service

log = get_logger("opscenter.external_jobs")


async def check_overdue(app: AppContext, now: datetime | None = None) -> list[Event]:
    """One round; publishes (after the commit) and returns the events it raised."""
    async with app.db.write_session() as session:
        events = await service.raise_overdue(session, now or utcnow())
        await session.commit()
    for event in events:
        log.warning(
            "external job overdue",
            external_job_id=event.data["external_job_id"],
            job_name=event.data["job_name"],
        )
        app.events.publish(event)
    return events


async def run_forever(app: AppContext, interval_seconds: float) -> None:
    while True:
        try:
            await check_overdue(app)
        except Exception:
            log.exception("external job overdue check failed")
        await asyncio.sleep(interval_seconds)
