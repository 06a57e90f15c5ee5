"""What the finops domain adds to the running system: its API and page, the import job,
and an hourly pass over budgets and recommendations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from opscenter.core.background import Loop
from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.logging import get_logger
from opscenter.core.pages import NavLink
from opscenter.core.principal import SYSTEM
from opscenter.core.registry import Registry
from opscenter.finops import importer, pages, recommend, service
from opscenter.finops.router import IMPORT_KIND, router
from opscenter.jobs.runner import JobContext, JobFailed
from opscenter.models import JobStatus

log = get_logger(__name__)
HOURLY = 3600.0


async def review(ctx: AppContext, team_id: int | None = None) -> None:
    """Budgets and recommendations against the newest figures; events after the commit."""
    async with ctx.db.write_session() as session:
        raised = await service.evaluate_budgets(session, SYSTEM, team_id)
        await recommend.refresh(session, SYSTEM)
        await session.commit()
    for type_, data, team in raised:
        ctx.events.publish(Event(type_, data, team_id=team))


def _wire(ctx: AppContext) -> None:
    async def run(job: JobContext) -> dict[str, Any]:
        import_id, path = int(job.params["import_id"]), Path(job.params["path"])
        progress = importer.Progress()

        async def on_progress(percent: float) -> None:
            await job.progress(percent=percent, phase="importing")

        try:
            await importer.run(ctx.db, import_id, path, progress, on_progress)
        except importer.ImportFailed as failed:
            await importer.discard(ctx.db, import_id, failed.message, progress)
            raise JobFailed(failed.code, failed.message) from None
        try:
            await review(ctx, job.team_id)
        except Exception:  # the import itself stands; the hourly pass reviews again
            log.exception("finops review after an import failed", import_id=import_id)
        return {
            "import_id": import_id,
            "rows_imported": progress.rows - progress.rejected,
            "rows_rejected": progress.rejected,
        }

    async def finish(job: JobContext, status: str, code: str | None, message: str | None) -> None:
        import_id = int(job.params["import_id"])
        if status != JobStatus.SUCCEEDED and code not in importer.FAILURE_CODES:
            # Cancelled, interrupted or crashed: no line of it may stay.
            await importer.discard(ctx.db, import_id, message or status, None)
        importer.remove(Path(job.params["path"]))
        ctx.events.publish(
            Event(
                "finops.import_completed"
                if status == JobStatus.SUCCEEDED
                else "finops.import_failed",
                {"import_id": import_id, "status": status, "error": message},
                team_id=job.team_id,
            )
        )

    ctx.runner.register(IMPORT_KIND, run, finish)


def _hourly(ctx: AppContext, server: bool) -> Loop | None:
    if not server or ctx.settings.scheduler_interval_seconds <= 0:
        return None

    async def forever() -> None:
        while True:
            await asyncio.sleep(HOURLY)
            try:
                await review(ctx)
            except Exception:
                log.exception("finops review failed")

    return Loop("finops-review", forever)


def register(registry: Registry) -> None:
    registry.api(router)
    # A cost file streams to a temp file under its own limit (4 GiB).
    registry.streamed_upload("/finops/imports")
    registry.wire(_wire)
    registry.background(_hourly)
    registry.page("/finops", pages.finops_page, permission="read:finops")
    registry.nav(NavLink("Operations", "Costs", "/finops", "read:finops", rank=150))
