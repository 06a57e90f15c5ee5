"""What the runbooks domain (seed 004's SOPs) adds to the running system."""

from __future__ import annotations

from opscenter.core.background import Loop
from opscenter.core.context import AppContext
from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.runbooks import pages
from opscenter.runbooks.jobs import RunbookJobs
from opscenter.runbooks.router import router


def _watcher(ctx: AppContext, server: bool) -> Loop | None:
    # The server's process settles the verify steps; a CLI process lives too short.
    return Loop("runbook-verify-steps", RunbookJobs(ctx).watch) if server else None


def register(registry: Registry) -> None:
    registry.api(router)
    registry.wire(lambda ctx: RunbookJobs(ctx).register())
    registry.background(_watcher)
    registry.page("/sops", pages.sops_page, permission="read:sops")
    registry.page("/sops/executions/{run_id}", pages.sop_run_page, permission="read:sops")
    registry.nav(NavLink("Operations", "Runbooks", "/sops", "read:sops", rank=130))
