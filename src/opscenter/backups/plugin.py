"""What the backups domain adds to the running system."""

from __future__ import annotations

from opscenter.backups import pages
from opscenter.backups.execute import BackupJobs
from opscenter.backups.router import router, storage_router
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry


def register(registry: Registry) -> None:
    registry.api(router, storage_router)
    # An imported artifact streams to storage, bounded by its manifest.
    registry.streamed_upload("/backups/import")
    registry.wire(lambda ctx: BackupJobs(ctx).register(ctx.runner))
    registry.page("/backups", pages.backups_page, permission="read:backups")
    registry.page("/backups/rows", pages.backup_rows_partial, permission="read:backups")
    registry.page("/backups/{backup_id}/restore", pages.restore_page, permission="execute:restores")
    registry.nav(NavLink("Backups", "Backups", "/backups", "read:backups", rank=10))
