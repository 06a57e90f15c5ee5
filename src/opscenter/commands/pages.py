"""The commands pages: templates with a run form (target preview, typed variables), and
an execution's record with its output live."""

from __future__ import annotations

from opscenter.commands import service
from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.pagination import PathId
from opscenter.core.principal import Principal
from opscenter.servers import service as servers


async def commands_page(principal: Principal, session: SessionDep) -> View:
    rows = (await session.scalars(service.commands_query(principal).limit(LIST_LIMIT))).all()
    recent = (await session.scalars(service.executions_query(principal).limit(50))).all()
    server_rows = (await session.scalars(servers.servers_query(principal))).all()
    return View(
        "commands.html",
        {
            "commands": [service.command_out(c) for c in rows],
            "executions": [service.execution_out(e) for e in recent],
            "servers": [service.target_out(s) for s in server_rows],
            "counts": _counts([e.status for e in recent]),
        },
    )


def _counts(statuses: list[str]) -> dict[str, int]:
    """How the recent executions ended, for the chart."""
    counts = {s: 0 for s in ("completed", "failed", "timed_out", "cancelled", "running")}
    for status in statuses:
        key = "running" if status == "pending" else status
        counts[key] = counts.get(key, 0) + 1
    return counts


async def execution_page(execution_id: PathId, principal: Principal, session: SessionDep) -> View:
    e, results = await service.get_execution(session, principal, execution_id)
    return View("command_execution.html", {"e": service.execution_out(e, results)})
