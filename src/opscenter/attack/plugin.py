"""What the ATT&CK catalogue adds to the running system: its read-only API."""

from __future__ import annotations

from opscenter.attack.router import router
from opscenter.core.registry import Registry


def register(registry: Registry) -> None:
    registry.api(router)
