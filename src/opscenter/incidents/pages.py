"""The incident board, an incident's page, the tasks list and the SLA chart."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from pydantic import BeforeValidator

from opscenter.core.context import Ctx, SessionDep, client_ip
from opscenter.core.db import release
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.core.schemas import MAX_ID
from opscenter.incidents import evidence as ev
from opscenter.incidents import service, tasks
from opscenter.incidents.schemas import Environment, EvidenceType, Severity
from opscenter.models import IncidentStatus, TaskStatus

#: Per column of the board: the newest of each status.
BOARD_COLUMN = 50
_blank = BeforeValidator(lambda v: v or None)
Choice = Annotated[str | None, _blank, Query(max_length=64)]


async def _client_ip(request: Request) -> str:
    return client_ip(request)


ClientIp = Annotated[str, Depends(_client_ip)]


def _pick(value: str | None, allowed: list[str]) -> str | None:
    """A filter form's choice, or none when empty or unknown (a page never 422s on it)."""
    return value if value in allowed else None


async def board_page(
    principal: Principal,
    session: SessionDep,
    environment: Choice = None,
    severity: Choice = None,
    squad: Choice = None,
) -> View:
    filters = service.Filters(
        environment=_pick(environment, [e.value for e in Environment]),
        severity=_pick(severity, [s.value for s in Severity]),
        squad=squad
        if squad and squad.replace("-", "").replace("_", "").replace(".", "").isalnum()
        else None,
    )
    columns = []
    for status in service.ORDER:
        filters.status = status.value
        stmt = service.incidents_query(principal, filters).limit(BOARD_COLUMN)
        rows = (await session.scalars(stmt)).all()
        columns.append((status.value, await service.outputs(session, rows)))
    return View(
        "incidents.html",
        {
            "columns": columns,
            "filters": filters,
            "environments": [e.value for e in Environment],
            "severities": [s.value for s in Severity],
            "metrics": await service.metrics(session, principal, 30),
        },
    )


async def incident_page(
    principal: Principal,
    session: SessionDep,
    ctx: Ctx,
    ip: ClientIp,
    incident_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> View:
    """Showing the evidence is viewing it: each item shown goes into its custody log."""
    incident = await service.get_incident(session, principal, incident_id)
    timeline = (await session.scalars(service.timeline_query(incident.id).limit(500))).all()
    items = (await session.scalars(ev.evidence_query(incident.id).limit(LIST_LIMIT))).all()
    newer = await ev.superseded_by(session, items)
    task_rows = (
        await session.scalars(
            tasks.tasks_query(principal, tasks.TaskFilters(incident_id=incident.id)).limit(
                LIST_LIMIT
            )
        )
    ).all()
    out = await service.output(session, incident)
    task_out = await tasks.outputs(session, list(task_rows))
    await release(session)
    await ev.record_custody(ctx.db, [ev.custody(i, principal, "viewed", ip) for i in items])
    return View(
        "incident.html",
        {
            "incident": out,
            "timeline": [service.timeline_out(t) for t in timeline],
            "evidence": [ev.evidence_out(i, newer) for i in items],
            "evidence_types": [t.value for t in EvidenceType],
            "tasks": task_out,
            "task_statuses": [s.value for s in TaskStatus],
            "severities": [s.value for s in Severity],
        },
    )


async def tasks_page(
    principal: Principal,
    session: SessionDep,
    status: Choice = None,
    squad: Choice = None,
) -> View:
    filters = tasks.TaskFilters(
        status=_pick(status, [s.value for s in TaskStatus]),
        squad=squad if squad and len(squad) <= 64 else None,
    )
    rows = (await session.scalars(tasks.tasks_query(principal, filters).limit(LIST_LIMIT))).all()
    return View(
        "tasks.html",
        {
            "tasks": await tasks.outputs(session, list(rows)),
            "filters": filters,
            "task_statuses": [s.value for s in TaskStatus],
        },
    )


async def sla_page(
    principal: Principal,
    session: SessionDep,
    squad: Choice = None,
    weeks: Annotated[int, Query(ge=1, le=52)] = 12,
) -> View:
    squad = squad if squad and len(squad) <= 64 else None
    rows = await tasks.sla_weeks(session, principal, weeks, squad)
    forecast = tasks.forecast(rows)
    chart = {
        "weeks": [str(w.week_start) for w in reversed(rows)],
        "requested": [w.total_requested_hours for w in reversed(rows)],
        "delivered": [w.total_delivered_hours for w in reversed(rows)],
        "sla": [w.sla_percentage for w in reversed(rows)],
        "forecast_weeks": [str(f.week_start) for f in forecast],
        "forecast": [f.sla_percentage for f in forecast],
    }
    return View(
        "sla.html",
        {
            "weeks": rows,
            "forecast": forecast,
            "method": tasks.FORECAST_METHOD,
            "chart": chart,
            "squad": squad or "",
            "weeks_count": weeks,
            "open_states": [s.value for s in IncidentStatus],
        },
    )
