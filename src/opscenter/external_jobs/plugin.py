"""What the external_jobs domain adds to the running system."""

from __future__ import annotations

from opscenter.core.background import Loop
from opscenter.core.context import AppContext
from opscenter.core.registry import Registry
from opscenter.external_jobs.router import legacy_router, router
from opscenter.external_jobs.watch import run_forever


def _overdue_watch(ctx: AppContext, server: bool) -> Loop | None:
    seconds = ctx.settings.external_jobs_check_seconds
    if not server or seconds <= 0:
        return None
    return Loop("external-jobs-watch", lambda: run_forever(ctx, seconds))


def register(registry: Registry) -> None:
    registry.api(router)
    # Seed 000's legacy report path for backup scripts, outside the versioned API.
    registry.root(legacy_router)
    registry.background(_overdue_watch)
