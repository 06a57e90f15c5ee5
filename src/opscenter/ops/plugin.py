"""What the ops domain adds to the running system."""

from __future__ import annotations

from opscenter.core.background import Background
from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.metrics import BACKUP_BYTES, MetricsServer
from opscenter.core.registry import Registry
from opscenter.ops.router import router
from opscenter.ops.service import backup_size


def _wire(ctx: AppContext) -> None:
    # Reactions run in the process that ran the backup: each byte is counted once.
    async def count_bytes(event: Event) -> None:
        BACKUP_BYTES.inc(await backup_size(ctx, int(event.data["backup_id"])))

    ctx.events.react_to("backup.completed", count_bytes)


def _metrics_server(ctx: AppContext, server: bool) -> Background | None:
    """A worker's own /metrics (its jobs' durations, bytes, relay lag); the API server
    serves them on its port already."""
    port = ctx.settings.metrics_port
    return MetricsServer(ctx.settings.host, port) if port and not server else None


def register(registry: Registry) -> None:
    registry.root(router)
    registry.wire(_wire)
    registry.background(_metrics_server, outlives_jobs=True)  # up while jobs finish
