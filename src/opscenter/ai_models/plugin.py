"""What the AI model registry adds to the running system."""

from __future__ import annotations

from opscenter.ai_models.router import router
from opscenter.core.registry import Registry


def register(registry: Registry) -> None:
    registry.api(router)
