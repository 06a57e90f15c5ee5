"""What scans and policies add to the security domain: their API, the scan job and the
Scans and Policies pages (kept apart from plugin.py so each part stays on its own)."""

from __future__ import annotations

from typing import Any

from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.jobs.runner import JobContext
from opscenter.models import JobStatus
from opscenter.security import scan, scan_pages
from opscenter.security.scan_router import router


def _wire(ctx: AppContext) -> None:
    async def run(job: JobContext) -> dict[str, Any]:
        return await scan.run(ctx.db, ctx.settings, job)

    async def finish(job: JobContext, status: str, code: str | None, message: str | None) -> None:
        scan_id = int(job.params["scan_id"])
        if status != JobStatus.SUCCEEDED:
            await scan.fail(ctx.db, scan_id, status, message)
        ctx.events.publish(
            Event(
                "security.scan_completed"
                if status == JobStatus.SUCCEEDED
                else "security.scan_failed",
                {"scan_id": scan_id, "status": status, "error": message},
                team_id=job.team_id,
            )
        )

    ctx.runner.register(scan.JOB_KIND, run, finish)


def register(registry: Registry) -> None:
    registry.api(router)
    registry.wire(_wire)
    registry.page("/security/scans", scan_pages.scans_page, permission="read:security")
    registry.page("/security/policies", scan_pages.policies_page, permission="read:security")
    registry.nav(
        NavLink("Security and compliance", "Scans", "/security/scans", "read:security", rank=213)
    )
    registry.nav(
        NavLink(
            "Security and compliance", "Policies", "/security/policies", "read:security", rank=214
        )
    )
