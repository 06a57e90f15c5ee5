"""What the commands domain adds to the running system: commands and runbooks (SOPs)."""

from __future__ import annotations

from opscenter.commands.jobs import CommandJobs
from opscenter.commands.router import router
from opscenter.core.registry import Registry


def register(registry: Registry) -> None:
    registry.api(router)
    registry.wire(lambda ctx: CommandJobs(ctx).register())
