"""The servers page."""

from __future__ import annotations

from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.servers import service as servers
from opscenter.servers.schemas import Environment, ServerType


async def servers_page(principal: Principal, session: SessionDep) -> View:
    rows = (await session.scalars(servers.servers_query(principal).limit(LIST_LIMIT))).all()
    return View(
        "servers.html",
        {
            "servers": [servers.server_out(s) for s in rows],
            "types": [t.value for t in ServerType],
            "environments": [e.value for e in Environment],
        },
    )
