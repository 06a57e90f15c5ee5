"""What the backups domain adds to the running system."""

from __future__ import annotations

from opscenter.backups.execute import BackupJobs
from opscenter.backups.router import router, storage_router
from opscenter.core.registry import Registry


def register(registry: Registry) -> None:
    registry.api(router, storage_router)
    registry.wire(lambda ctx: BackupJobs(ctx).register(ctx.runner))
