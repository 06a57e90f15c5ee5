"""What the runbooks domain (seed 004's SOPs) adds to the running system."""

from __future__ import annotations

from opscenter.core.registry import Registry
from opscenter.runbooks.jobs import RunbookJobs
from opscenter.runbooks.router import router


def register(registry: Registry) -> None:
    registry.api(router)
    registry.wire(lambda ctx: RunbookJobs(ctx).register())
