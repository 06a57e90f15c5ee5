"""What the external_jobs domain adds to the running system."""

from __future__ import annotations

from opscenter.core.registry import Registry
from opscenter.external_jobs.router import legacy_router, router


def register(registry: Registry) -> None:
    registry.api(router)
    # Seed 000's legacy report path for backup scripts, outside the versioned API.
    registry.root(legacy_router)
