"""Resource pages: the infrastructure overview, host graphs, alerts with their rules, and
the capacity forecast. Each reads the same services as the API; changes go through it."""

from __future__ import annotations

from typing import Annotated, get_args

from fastapi import Query

from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, FilterId, View
from opscenter.core.principal import Principal
from opscenter.resources import alerts, service
from opscenter.resources.schemas import METRICS, Severity
from opscenter.servers import service as servers

WINDOWS = ("1h", "6h", "24h", "7d", "30d")
GRAPHS = (
    ("cpu_percent", "CPU %"),
    ("memory_used_percent", "Memory used %"),
    ("load_1", "Load (1 min)"),
    ("disk_used_percent", "Disk used % per mount"),
    ("net_rx_bytes_per_second", "Network received, bytes/s"),
    ("net_tx_bytes_per_second", "Network sent, bytes/s"),
)


async def overview_page(principal: Principal, session: SessionDep) -> View:
    return View("resources.html", {"items": await service.infrastructure(session, principal)})


async def graphs_page(
    principal: Principal,
    session: SessionDep,
    server_id: FilterId = None,
    window: Annotated[str, Query(max_length=4)] = "24h",
) -> View:
    source = await service.source_of(session, principal, server_id, None)
    server_list = (await session.scalars(servers.servers_query(principal))).all()
    return View(
        "resource_graphs.html",
        {
            "source": source,
            "servers": [(s.id, s.name) for s in server_list],
            "window": window if window in WINDOWS else "24h",
            "windows": WINDOWS,
            "graphs": GRAPHS,
        },
    )


async def alerts_page(
    principal: Principal,
    session: SessionDep,
    status: Annotated[str, Query(max_length=20)] = "open",
) -> View:
    chosen = status if status in ("open", "resolved", "all") else "open"
    stmt = alerts.alerts_query(principal, status=None if chosen == "all" else chosen)
    rows = (await session.scalars(stmt.limit(LIST_LIMIT))).all()
    rules = (await session.scalars(alerts.rules_query(principal).limit(LIST_LIMIT))).all()
    server_list = (await session.scalars(servers.servers_query(principal))).all()
    return View(
        "resource_alerts.html",
        {
            "alerts": [alerts.alert_out(a) for a in rows],
            "rules": [alerts.rule_out(r) for r in rules],
            "servers": {s.id: s.name for s in server_list},
            "status": chosen,
            "metrics": METRICS,
            "operators": get_args(alerts.OPERATOR_TYPE),
            "severities": get_args(Severity),
        },
    )


async def capacity_page(principal: Principal, session: SessionDep) -> View:
    return View(
        "resource_capacity.html", {"items": await service.forecasts(session, principal, "30d")}
    )
