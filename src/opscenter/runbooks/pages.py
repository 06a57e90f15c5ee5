"""The runbooks pages: the list with its editor, and a run's record where people tick
manual steps, approve, pause, resume and cancel."""

from __future__ import annotations

import json

from opscenter.commands import service as commands
from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.pagination import PathId
from opscenter.core.principal import Principal
from opscenter.runbooks import service
from opscenter.servers import service as servers

STEPS_EXAMPLE = [
    {"name": "Announce the maintenance", "type": "manual"},
    {"name": "Change approval", "type": "approval", "approver_role": "admin"},
    {"name": "Run the command", "type": "command", "command_id": 1, "variables": {}},
]


async def sops_page(principal: Principal, session: SessionDep) -> View:
    rows = (await session.scalars(service.sops_query(principal).limit(LIST_LIMIT))).all()
    runs = (await session.scalars(service.runs_query(principal).limit(50))).all()
    cmds = (await session.scalars(commands.commands_query(principal).limit(LIST_LIMIT))).all()
    server_rows = (await session.scalars(servers.servers_query(principal))).all()
    return View(
        "sops.html",
        {
            "sops": [service.sop_out(s) for s in rows],
            "runs": [service.run_out(r) for r in runs],
            "commands": [commands.command_out(c) for c in cmds],
            "servers": [commands.target_out(s) for s in server_rows],
            "steps_example": json.dumps(STEPS_EXAMPLE, indent=2),
        },
    )


async def sop_run_page(run_id: PathId, principal: Principal, session: SessionDep) -> View:
    run, steps = await service.get_run(session, principal, run_id)
    return View("sop_run.html", {"run": service.run_out(run, steps)})
