"""What the retention domain adds to the running system."""

from __future__ import annotations

from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.registry import Registry
from opscenter.models import JobStatus
from opscenter.retention.router import router
from opscenter.retention.service import after_backup


def _wire(ctx: AppContext) -> None:
    async def apply_policy(event: Event) -> None:
        await after_backup(ctx, int(event.data["backup_id"]), JobStatus.SUCCEEDED)

    ctx.events.react_to("backup.completed", apply_policy)


def register(registry: Registry) -> None:
    registry.api(router)
    registry.wire(_wire)
