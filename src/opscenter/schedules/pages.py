"""The schedules page and its live preview of the next runs; the retention page too: it
lists the schedules a policy can be attached to, and schedules builds on retention."""

from __future__ import annotations

from typing import Annotated, get_args

from fastapi import Query
from pydantic import ValidationError

from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.retention import service as retention
from opscenter.schedules import service as schedules
from opscenter.schedules.schemas import CronPreviewRequest, VerifyAfter
from opscenter.servers import service as servers


async def schedules_page(principal: Principal, session: SessionDep) -> View:
    rows = (await session.scalars(schedules.schedules_query(principal).limit(LIST_LIMIT))).all()
    server_list = (await session.scalars(servers.servers_query(principal))).all()
    return View(
        "schedules.html",
        {
            "schedules": [schedules.schedule_out(s) for s in rows],
            "servers": [servers.server_out(s) for s in server_list],
            "verify_choices": list(get_args(VerifyAfter)),
        },
    )


async def schedule_preview_partial(
    principal: Principal,
    cron_expression: Annotated[str, Query(max_length=400)] = "",
    timezone: Annotated[str, Query(max_length=64)] = "UTC",
) -> View:
    """The next runs in words, from the service behind POST /api/v1/schedules/preview."""
    context: dict[str, object] = {"timezone": timezone}
    try:
        body = CronPreviewRequest(cron_expression=cron_expression, timezone=timezone or "UTC")
        context["preview"] = schedules.preview(
            body.cron_expression, body.timezone, body.count, utcnow()
        )
    except ValidationError as err:
        context["error"] = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
    return View("partials/cron_preview.html", context)


async def retention_page(principal: Principal, session: SessionDep) -> View:
    rows = (await session.scalars(retention.policies_query(principal).limit(LIST_LIMIT))).all()
    used_by = await retention.users_of(session, [p.id for p in rows])
    schedule_rows = (await session.scalars(schedules.schedules_query(principal))).all()
    return View(
        "retention.html",
        {
            "policies": [retention.policy_out(p, used_by[p.id]) for p in rows],
            "schedules": [schedules.schedule_out(s) for s in schedule_rows],
        },
    )
