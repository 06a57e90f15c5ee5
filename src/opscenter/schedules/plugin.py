"""What the schedules domain adds to the running system."""

from __future__ import annotations

from opscenter.core.registry import Registry
from opscenter.schedules.router import policies_router, router


def register(registry: Registry) -> None:
    registry.api(router, policies_router)
