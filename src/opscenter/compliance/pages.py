"""The compliance pages: every framework's standing over a period with the evidence
people uploaded, and one framework's requirements with their controls and evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Query

from opscenter.compliance import catalogue, service
from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal

DEFAULT_DAYS = 90
Day = Annotated[str | None, Query(max_length=10)]


def _period(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """The form's dates (whole days, UTC), or the last 90 days; a page never 422s on them."""
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)

    def day(value: str | None) -> datetime | None:
        try:
            return datetime.strptime(value or "", "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            return None

    last = day(end) or today
    first = day(start) or last - timedelta(days=DEFAULT_DAYS)
    if first > today:
        first = today
    if last < first:
        last = first
    return first, last + timedelta(days=1, microseconds=-1)


def _form(first: datetime, last: datetime) -> dict[str, str]:
    return {"start": first.strftime("%Y-%m-%d"), "end": last.strftime("%Y-%m-%d")}


async def overview_page(
    principal: Principal, session: SessionDep, start: Day = None, end: Day = None
) -> View:
    first, last = _period(start, end)
    ids = list(catalogue.frameworks())
    assessments = await service.assess_frameworks(session, principal, ids, first, last)
    evidence = (await session.scalars(service.evidence_query(principal).limit(LIST_LIMIT))).all()
    reports = (await session.scalars(service.reports_query(principal).limit(LIST_LIMIT))).all()
    return View(
        "compliance.html",
        {
            "assessments": assessments,
            "period": _form(first, last),
            "evidence": [service.evidence_out(e) for e in evidence],
            "reports": [service.report_out(r) for r in reports],
            "controls": service.controls_out(),
        },
    )


async def framework_page(
    framework_id: str,
    principal: Principal,
    session: SessionDep,
    start: Day = None,
    end: Day = None,
) -> View:
    first, last = _period(start, end)
    assessment = await service.assess_framework(session, principal, framework_id, first, last)
    reports = (
        await session.scalars(service.reports_query(principal, framework_id).limit(LIST_LIMIT))
    ).all()
    return View(
        "compliance_framework.html",
        {
            "a": assessment,
            "period": _form(first, last),
            "reports": [service.report_out(r) for r in reports],
        },
    )
