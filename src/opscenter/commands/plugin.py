"""What the commands domain adds to the running system: commands and runbooks (SOPs)."""

from __future__ import annotations

from opscenter.commands import pages
from opscenter.commands.jobs import CommandJobs
from opscenter.commands.router import router
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry


def register(registry: Registry) -> None:
    registry.api(router)
    registry.wire(lambda ctx: CommandJobs(ctx).register())
    registry.page("/commands", pages.commands_page, permission="read:commands")
    registry.page(
        "/commands/executions/{execution_id}", pages.execution_page, permission="read:commands"
    )
    registry.nav(NavLink("Operations", "Commands", "/commands", "read:commands", rank=120))
