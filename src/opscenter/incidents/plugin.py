"""What the incidents domain adds to the running system."""

from __future__ import annotations

from opscenter.core.registry import Registry
from opscenter.incidents.router import router


def register(registry: Registry) -> None:
    registry.api(router)
