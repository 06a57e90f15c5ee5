"""What the integrations domain adds to the running system."""

from __future__ import annotations

from opscenter.core.registry import Registry
from opscenter.integrations.delivery import DeliveryWorker
from opscenter.integrations.router import router


def register(registry: Registry) -> None:
    registry.api(router)
    # Events become queued deliveries in every process; only the server sends them.
    registry.background(lambda ctx, server: DeliveryWorker(ctx, send=server), outlives_jobs=True)
