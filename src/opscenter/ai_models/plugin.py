"""What the AI model registry adds to the running system."""

from __future__ import annotations

from opscenter.ai_models import pages
from opscenter.ai_models.router import router
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry


def register(registry: Registry) -> None:
    registry.api(router)
    registry.page("/ai-models", pages.ai_models_page, permission="read:ai_models")
    registry.page("/ai-models/live", pages.ai_live_partial, permission="read:ai_models")
    registry.nav(NavLink("Operations", "AI models", "/ai-models", "read:ai_models", rank=190))
