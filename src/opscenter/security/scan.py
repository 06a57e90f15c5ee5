"""A scan: the enabled posture policies against this installation and the surface
policies against the assets at allowed addresses, run as a job. What fails becomes
findings through the importers' own path (dedup, close what passes now, reopen what
fails again); the scan row keeps what it did."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.config import Settings
from opscenter.core.clock import utcnow
from opscenter.core.db import Database
from opscenter.core.errors import Conflict, NotFound
from opscenter.core.principal import SYSTEM, Principal
from opscenter.core.scoping import readable
from opscenter.jobs import service as jobs
from opscenter.jobs.runner import JobContext
from opscenter.models import Finding, Job, SecurityAsset, Server, Team
from opscenter.models.security import Severity
from opscenter.models.security_scan import ScanScope, ScanStatus, SecurityScan, SurfaceAllow
from opscenter.security import policies as pol
from opscenter.security import posture, service, surface
from opscenter.security.importers import ParsedFinding
from opscenter.security.scan_schemas import Check, ScanIn, ScanOut, ScanResult, ScanSource

JOB_KIND = "security_scan"
#: The asset the posture findings of a team hang on: this installation itself.
INSTALLATION = "opscenter (this installation)"
RESULTS_KEPT = 500
ACTIVE = (ScanStatus.QUEUED, ScanStatus.RUNNING)
SEVERITY_RANK = {s.value: i for i, s in enumerate(Severity)}


# -- the allow-list -------------------------------------------------------------------------
async def allow_list(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(SurfaceAllow.entry).order_by(SurfaceAllow.entry)))


async def set_allow_list(
    session: AsyncSession, principal: Principal, entries: list[str], now: datetime
) -> tuple[list[str], list[str]]:
    """Replace the list; answers what was added and what was removed."""
    before = set(await allow_list(session))
    after = set(entries)
    for row in await session.scalars(
        select(SurfaceAllow).where(SurfaceAllow.entry.in_(before - after))
    ):
        await session.delete(row)
    for entry in sorted(after - before):
        session.add(SurfaceAllow(entry=entry, created_by=principal.user_id or None, created_at=now))
    await session.flush()
    return sorted(after - before), sorted(before - after)


# -- starting and reading scans -------------------------------------------------------------
async def start(
    session: AsyncSession, principal: Principal, body: ScanIn, now: datetime
) -> tuple[SecurityScan, Job]:
    team = service.team_for(principal, body.team_id)
    if await session.get(Team, team) is None:  # the all-teams scope passes any number
        raise NotFound("Team", team)
    for asset_id in body.asset_ids or []:
        await service.get_asset(session, principal, asset_id)  # another team's: 404
    running = await session.scalar(
        select(SecurityScan.id).where(SecurityScan.team_id == team, SecurityScan.status.in_(ACTIVE))
    )
    if running is not None:
        raise Conflict(f"Scan {running} of this team is still running; wait for it")
    scan = SecurityScan(
        team_id=team,
        scope=body.scope,
        asset_ids=sorted(set(body.asset_ids or [])),
        status=ScanStatus.QUEUED,
        created_by=principal.user_id or None,
        created_at=now,
    )
    session.add(scan)
    await session.flush()
    job = await jobs.create_job(
        session,
        principal,
        kind=JOB_KIND,
        team_id=team,
        lock_key=f"security-scan:{team}",
        resource_type="security_scan",
        resource_id=scan.id,
        params={"scan_id": scan.id},
    )
    scan.job_id = job.id
    await session.flush()
    return scan, job


def scans_query(principal: Principal) -> Any:
    return readable(select(SecurityScan), SecurityScan, principal).order_by(SecurityScan.id.desc())


async def scan_outputs(session: AsyncSession, rows: list[SecurityScan]) -> list[ScanOut]:
    job_ids = [s.job_id for s in rows if s.job_id]
    progress = {
        j.id: (j.progress, j.phase)
        for j in await session.scalars(select(Job).where(Job.id.in_(job_ids)))
    }
    return [
        ScanOut.model_validate(
            {
                **{c: getattr(s, c) for c in ScanOut.model_fields if hasattr(s, c)},
                "progress": progress.get(s.job_id or 0, (None, None))[0],
                "phase": progress.get(s.job_id or 0, (None, None))[1],
                "results": [ScanResult.model_validate(r) for r in s.results],
            }
        )
        for s in rows
    ]


# -- running one ----------------------------------------------------------------------------
@dataclass
class Found:
    """What one asset failed, per scanner, ready for the import path."""

    asset_id: int | None  # None: the team's installation asset (made on first use)
    server_id: int | None
    source: ScanSource
    findings: list[ParsedFinding] = field(default_factory=list)


def _parsed(policy: Any, issue: posture.Issue) -> ParsedFinding:
    return ParsedFinding(
        identifier=policy.key,
        title=issue.title[:500],
        severity=issue.severity or policy.severity,
        component=issue.subject,
    )


async def _posture(db: Database, settings: Settings, now: datetime) -> tuple[Found, int]:
    found = Found(None, None, ScanSource.POSTURE)
    async with db.read_session() as session:
        chosen = await pol.enabled(session, pol.Kind.POSTURE)
        for policy in chosen:
            found.findings += [
                _parsed(policy, i) for i in await posture.run(session, policy, now, settings)
            ]
    return found, len(chosen)


async def _targets(
    session: AsyncSession, scan: SecurityScan
) -> list[tuple[surface.Target, int | None]]:
    """The scan's assets with an address: its own assets and its team's servers."""
    assets = select(SecurityAsset).where(
        SecurityAsset.team_id == scan.team_id, SecurityAsset.address != ""
    )
    servers = select(Server).where(Server.team_id == scan.team_id, Server.host != "")
    if scan.asset_ids:
        assets = assets.where(SecurityAsset.id.in_(scan.asset_ids))
        linked = select(SecurityAsset.server_id).where(SecurityAsset.id.in_(scan.asset_ids))
        servers = servers.where(Server.id.in_(linked))
    out: list[tuple[surface.Target, int | None]] = []
    for a in await session.scalars(assets.where(SecurityAsset.server_id.is_(None))):
        out.append((surface.Target(a.id, a.address, tuple(sorted(set(a.ports)))), None))
    for s in await session.scalars(servers):
        ports = tuple(sorted({p for p in (s.port, s.db_port) if p}))
        out.append((surface.Target(0, s.host, ports), s.id))
    return out


async def _surface(
    db: Database, scan_id: int, job: JobContext, now: datetime
) -> tuple[list[Found], int, int, list[str]]:
    async with db.read_session() as session:
        scan = await session.get(SecurityScan, scan_id)
        assert scan is not None
        chosen = await pol.enabled(session, pol.Kind.SURFACE)
        allow = await allow_list(session)
        targets = await _targets(session, scan)
    # Everything below calls out; no session is open.
    checks = [(p, Check(p.check), pol.parameters(p.check, p.parameters)) for p in chosen]
    ports: set[int] = set()
    timeout = 0.5
    for _, _check, params in checks:
        if isinstance(params, pol.OpenPorts):
            ports |= set(params.ports)
            timeout = max(timeout, params.timeout_seconds)
    results, skipped, probed = [], [], 0
    for n, (target, server_id) in enumerate(targets):
        await job.progress(percent=100.0 * n / max(len(targets), 1), phase="probing")
        ip = await surface.resolve(target.address)
        if ip is None or not surface.allowed(ip, target.address, allow):
            skipped.append(target.address)  # not probed, and its findings stay as they are
            continue
        seen = await surface.probe(target, ip, ports, timeout)
        probed += 1
        found = Found(target.asset_id or None, server_id, ScanSource.SURFACE)
        for policy, check, params in checks:
            found.findings += [
                _parsed(policy, i) for i in surface.evaluate(check, params, seen, now)
            ]
        results.append(found)
    return results, len(checks), probed, sorted(set(skipped))


async def _installation(session: AsyncSession, team_id: int) -> SecurityAsset:
    asset = await session.scalar(
        select(SecurityAsset).where(
            SecurityAsset.team_id == team_id, SecurityAsset.name == INSTALLATION
        )
    )
    if asset is None:
        asset = SecurityAsset(
            team_id=team_id,
            name=INSTALLATION,
            kind="service",
            description="The posture scan's findings about this opscenter installation",
        )
        session.add(asset)
        await session.flush()
    return asset


def _report(scan_id: int, found: Found) -> service.ReportFile:
    body = json.dumps([f.__repr__() for f in found.findings]).encode()
    return service.ReportFile(
        f"scan-{scan_id}-{found.source}.json", hashlib.sha256(body).hexdigest(), len(body)
    )


async def run(db: Database, settings: Settings, job: JobContext) -> dict[str, Any]:
    scan_id = int(job.params["scan_id"])
    now = utcnow()
    async with db.write_session() as session:
        scan = await session.get(SecurityScan, scan_id)
        assert scan is not None
        scan.status = ScanStatus.RUNNING
        scope, team_id = ScanScope(scan.scope), scan.team_id
        await session.commit()
    found: list[Found] = []
    checks_run = probed = 0
    skipped: list[str] = []
    if scope in (ScanScope.POSTURE, ScanScope.BOTH):
        await job.progress(percent=0.0, phase="posture")
        installation, checks_run = await _posture(db, settings, now)
        found.append(installation)
    if scope in (ScanScope.SURFACE, ScanScope.BOTH):
        assets, surface_checks, probed, skipped = await _surface(db, scan_id, job, now)
        found += assets
        checks_run += surface_checks
    await job.progress(percent=99.0, phase="recording")
    sla = {str(k): v for k, v in settings.security_sla_days.items()}
    async with db.write_session() as session:
        scan = await session.get(SecurityScan, scan_id)
        assert scan is not None
        results: list[dict[str, Any]] = []
        for f in found:
            if f.server_id is not None:
                asset = await service.asset_of_server(session, SYSTEM, f.server_id)
            elif f.asset_id is not None:
                got = await session.get(SecurityAsset, f.asset_id)
                if got is None:
                    continue  # deleted while it was probed
                asset = got
            else:
                asset = await _installation(session, team_id)
            imp = await service.import_findings(
                session, SYSTEM, asset, f.source, f.findings, _report(scan_id, f), now, sla
            )
            scan.reported += imp.reported
            scan.new += imp.new
            scan.reopened += imp.reopened
            scan.closed += imp.closed
            results += await _results(session, asset.id, f, RESULTS_KEPT - len(results))
        scan.checks_run, scan.targets_probed, scan.targets_skipped = checks_run, probed, skipped
        scan.results = results
        scan.status, scan.finished_at = ScanStatus.SUCCEEDED, utcnow()
        summary = {
            "scan_id": scan.id,
            "reported": scan.reported,
            "new": scan.new,
            "reopened": scan.reopened,
            "closed": scan.closed,
        }
        await session.commit()
    return summary


async def _results(
    session: AsyncSession, asset_id: int, found: Found, room: int
) -> list[dict[str, Any]]:
    """The `room` most severe failures with their findings (the scan keeps no more)."""
    worst = sorted(found.findings, key=lambda f: SEVERITY_RANK[f.severity])[:room]
    prints = {service.fingerprint(asset_id, found.source, f): f for f in worst}
    ids = dict(
        (
            await session.execute(
                select(Finding.fingerprint, Finding.id).where(Finding.fingerprint.in_(prints))
            )
        ).all()
    )
    return [
        {
            "policy": f.identifier,
            "asset_id": asset_id,
            "finding_id": ids.get(fp),
            "title": f.title,
            "severity": f.severity,
        }
        for fp, f in prints.items()
    ]


async def fail(db: Database, scan_id: int, status: str, message: str | None) -> None:
    """A scan whose job did not succeed ends failed; its findings stay as they were (the
    import is one transaction, written only at the end)."""
    async with db.write_session() as session:
        scan = await session.get(SecurityScan, scan_id)
        if scan is not None and scan.status in ACTIVE:
            scan.status, scan.finished_at = ScanStatus.FAILED, utcnow()
            scan.error = message or status
            await session.commit()
