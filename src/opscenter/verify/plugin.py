"""What the verify domain adds to the running system."""

from __future__ import annotations

from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.models import JobStatus
from opscenter.verify import pages
from opscenter.verify.automatic import after_backup
from opscenter.verify.execute import VerifyJobs
from opscenter.verify.router import recovery_tests_router, router


def _wire(ctx: AppContext) -> None:
    VerifyJobs(ctx).register(ctx.runner)

    async def queue_check(event: Event) -> None:
        await after_backup(ctx, int(event.data["backup_id"]), JobStatus.SUCCEEDED)

    ctx.events.react_to("backup.completed", queue_check)


def register(registry: Registry) -> None:
    registry.api(router, recovery_tests_router)
    registry.wire(_wire)
    registry.page("/verification", pages.verification_page, permission="read:verification")
    registry.page(
        "/verification/{backup_id}/runs/{run_id}",
        pages.verification_detail_page,
        permission="read:verification",
    )
    registry.nav(NavLink("Backups", "Verification", "/verification", "read:verification", rank=30))
