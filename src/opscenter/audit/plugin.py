"""What the audit domain adds to the running system."""

from __future__ import annotations

from opscenter.audit.router import router
from opscenter.core.registry import Registry


def register(registry: Registry) -> None:
    registry.api(router)
