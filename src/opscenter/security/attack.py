"""ATT&CK coverage: for each tactic of the matrix, its techniques with the open findings,
the unresolved incidents and the enabled policies that name them (a sub-technique counts
for its parent)."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

from sqlalchemy import Select, String, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.attack.catalogue import catalogue
from opscenter.core.principal import Principal
from opscenter.core.scoping import readable
from opscenter.models.incidents import Incident, IncidentStatus
from opscenter.models.security import Finding, FindingStatus
from opscenter.models.security_scan import SecurityPolicy
from opscenter.security.threat_schemas import CoverageOut, TacticCoverage, TechniqueCoverage

_NONE = "[]"  # how an empty list is stored: rows without a technique are not read


async def _mentions(
    session: AsyncSession, stmt: Select[Any]
) -> tuple[Counter[str], dict[str, set[str]]]:
    """Per technique (parents for sub-techniques), how many rows name it; and which
    sub-techniques are named."""
    counts: Counter[str] = Counter()
    subs: dict[str, set[str]] = {}
    for (ids,) in (await session.execute(stmt)).all():
        parents = set()
        for tid in ids or []:
            parent = tid.split(".")[0]
            parents.add(parent)
            if "." in tid:
                subs.setdefault(parent, set()).add(tid)
        counts.update(parents)
    return counts, subs


async def coverage(
    session: AsyncSession, principal: Principal, team_id: int | None = None
) -> CoverageOut:
    findings = readable(
        cast(
            "Select[Any]",
            select(Finding.attack_techniques).where(
                Finding.status == FindingStatus.OPEN,
                sql_cast(Finding.attack_techniques, String) != _NONE,
            ),
        ),
        Finding,
        principal,
    )
    if team_id is not None:
        findings = findings.where(Finding.team_id == team_id)
    found, subs = await _mentions(session, findings)
    counted = principal.can("read:incidents")
    incidents: Counter[str] = Counter()
    if counted:
        stmt = readable(
            cast(
                "Select[Any]",
                select(Incident.attack_techniques).where(
                    Incident.status.not_in([IncidentStatus.RESOLVED, IncidentStatus.CLOSED]),
                    sql_cast(Incident.attack_techniques, String) != _NONE,
                ),
            ),
            Incident,
            principal,
        )
        if team_id is not None:
            stmt = stmt.where(Incident.team_id == team_id)
        incidents, incident_subs = await _mentions(session, stmt)
        for parent, named in incident_subs.items():
            subs.setdefault(parent, set()).update(named)
    # Policies are the installation's, not a team's: every reader sees them.
    enabled = select(SecurityPolicy.attack).where(SecurityPolicy.enabled.is_(True))
    policies, policy_subs = await _mentions(session, cast("Select[Any]", enabled))
    for parent, named in policy_subs.items():
        subs.setdefault(parent, set()).update(named)
    known = catalogue()
    tactics = []
    for tactic in known.tactics:
        techniques = [
            TechniqueCoverage(
                id=t.id,
                name=t.name,
                findings=found[t.id],
                incidents=incidents[t.id],
                policies=policies[t.id],
                subtechniques=sorted(subs.get(t.id, ())),
            )
            for t in known.techniques.values()
            if not t.is_subtechnique and tactic.shortname in t.tactics
        ]
        tactics.append(
            TacticCoverage(
                id=tactic.id,
                shortname=tactic.shortname,
                name=tactic.name,
                techniques_total=len(techniques),
                techniques_referenced=sum(
                    1 for t in techniques if t.findings or t.incidents or t.policies
                ),
                techniques=techniques,
            )
        )
    return CoverageOut(attack_version=known.version, incidents_counted=counted, tactics=tactics)
