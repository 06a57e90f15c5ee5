"""What the auth domain adds to the running system."""

from __future__ import annotations

from opscenter.auth.deps import forget_principals_on_change
from opscenter.auth.router import router
from opscenter.core.registry import Registry


def register(registry: Registry) -> None:
    registry.api(router)
    registry.wire(forget_principals_on_change)
