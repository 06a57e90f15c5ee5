"""The Scans page (start a scan, its progress, what it found, linking to the findings)
and the Policies page (every check with its references; admins edit)."""

from __future__ import annotations

from sqlalchemy import select

from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.models import Team
from opscenter.security import policies, scan, service
from opscenter.security.scan_schemas import Check, Framework


async def scans_page(principal: Principal, session: SessionDep) -> View:
    rows = list((await session.scalars(scan.scans_query(principal).limit(LIST_LIMIT))).all())
    assets, _ = await service.asset_page(session, service.assets_query(principal), LIST_LIMIT, 0)
    return View(
        "security_scans.html",
        {
            "scans": await scan.scan_outputs(session, rows),
            "assets": [a for a in assets if a.address],
            "allow_list": await scan.allow_list(session),
            "running": any(s.status in scan.ACTIVE for s in rows),
            "teams": (
                await session.scalars(
                    select(Team).where(Team.id.in_(principal.team_ids)).order_by(Team.name)
                )
            ).all(),
        },
    )


async def policies_page(principal: Principal, session: SessionDep) -> View:
    rows = await policies.list_policies(session)
    return View(
        "security_policies.html",
        {
            "policies": [policies.policy_out(p) for p in rows],
            "checks": list(Check),
            "frameworks": list(Framework),
        },
    )
