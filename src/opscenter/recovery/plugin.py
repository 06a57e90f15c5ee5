"""What the recovery domain adds to the running system."""

from __future__ import annotations

from opscenter.core.registry import Registry
from opscenter.recovery.router import points_router, status_router


def register(registry: Registry) -> None:
    registry.api(status_router, points_router)
