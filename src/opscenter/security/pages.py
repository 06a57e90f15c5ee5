"""The findings page (filters, SLA state, risk acceptance, report import), the assets
page and the security metrics with their weekly trend chart."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import BeforeValidator

from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.models.security import FindingStatus, Severity
from opscenter.security import service
from opscenter.security.importers.formats import Scanner

# An empty choice is none; every value is checked against its list (`_pick`), so no length
# limit is needed (and pydantic's would be applied to the None).
_blank = BeforeValidator(lambda v: v or None)
Choice = Annotated[str | None, _blank, Query()]


def _pick(value: str | None, allowed: list[str]) -> str | None:
    """A filter form's choice, or none when empty or unknown (a page never 422s on it)."""
    return value if value in allowed else None


async def findings_page(
    principal: Principal,
    session: SessionDep,
    severity: Choice = None,
    status: Choice = None,
    asset: Choice = None,
    overdue: Choice = None,
) -> View:
    now = utcnow()
    filters = service.Filters(
        severity=Severity(s) if (s := _pick(severity, list(Severity))) else None,
        status=FindingStatus(s) if (s := _pick(status, list(FindingStatus))) else None,
        asset_id=int(asset) if asset and asset.isdigit() and len(asset) < 10 else None,
        overdue={"yes": True, "no": False}.get(overdue or ""),
    )
    rows = (
        await session.scalars(service.findings_query(principal, filters, now).limit(LIST_LIMIT))
    ).all()
    assets, _ = await service.asset_page(session, service.assets_query(principal), LIST_LIMIT, 0)
    return View(
        "security.html",
        {
            "findings": await service.finding_outputs(session, rows, now),
            "filters": filters,
            "overdue": overdue or "",
            "severities": list(Severity),
            "statuses": list(FindingStatus),
            "scanners": list(Scanner),
            "assets": assets,
            "me_id": principal.user_id,
        },
    )


async def assets_page(principal: Principal, session: SessionDep) -> View:
    assets, total = await service.asset_page(
        session, service.assets_query(principal), LIST_LIMIT, 0
    )
    return View("security_assets.html", {"assets": assets, "total": total})


async def metrics_page(principal: Principal, session: SessionDep) -> View:
    figures = await service.metrics(session, principal, utcnow())
    return View(
        "security_metrics.html",
        {"metrics": figures, "chart": [w.model_dump(mode="json") for w in figures.weeks]},
    )
