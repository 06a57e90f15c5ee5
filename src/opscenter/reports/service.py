"""Reports: a report per (team, kind, period), a version per generation, files in the
team's storage. No HTTP here; the job handlers are in `jobs.py`."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.errors import Conflict, InvalidInput, NotFound
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.models import Report, ReportVersion, StorageProvider
from opscenter.reports.kinds import KINDS
from opscenter.reports.schemas import GenerateIn, ReportOut, VersionOut
from opscenter.stores.backends import StorageBackend

API = "/api/v1/reports"
JOB_KIND = "report"
EXTENSIONS = {"pdf": "pdf", "csv": "csv", "json": "json"}


def team_for(principal: Principal, team_id: int | None) -> int:
    if team_id is not None:
        check_team_access(principal, team_id)
        return team_id
    if len(principal.team_ids) == 1:
        return next(iter(principal.team_ids))
    if not principal.team_ids:
        raise InvalidInput("You belong to no team: give team_id")
    raise InvalidInput("You belong to several teams: give team_id")


async def report_storage(session: AsyncSession, team_id: int) -> StorageProvider:
    provider = await session.scalar(
        select(StorageProvider)
        .where(StorageProvider.team_id == team_id, StorageProvider.is_active.is_(True))
        .order_by(StorageProvider.is_default.desc(), StorageProvider.id)
        .limit(1)
    )
    if provider is None:
        raise InvalidInput(
            "This team has no active storage provider to keep reports in; "
            "add one under /storage/providers"
        )
    return provider


async def report_for(
    session: AsyncSession, principal: Principal, data: GenerateIn, team_id: int
) -> Report:
    """The team's report of this kind and period, made on its first generation."""
    report = await session.scalar(
        select(Report).where(
            Report.team_id == team_id, Report.kind == data.kind, Report.period == data.period
        )
    )
    if report is None:
        report = Report(
            team_id=team_id,
            kind=data.kind,
            period=data.period,
            title=data.title or KINDS[data.kind].title,
            created_by=principal.user_id or None,
        )
        session.add(report)
        await session.flush()
    elif data.title:
        report.title = data.title
    return report


def storage_key(report: Report, fmt: str) -> str:
    # Generated and kept in the job's params: its finisher removes what a failed job left.
    return f"reports/team-{report.team_id}/report-{report.id}/{uuid.uuid4().hex}.{EXTENSIONS[fmt]}"


def reports_query(principal: Principal, kind: str | None = None) -> Select[Any]:
    stmt = readable(select(Report), Report, principal)
    if kind:
        stmt = stmt.where(Report.kind == kind)
    return stmt.order_by(Report.updated_at.desc(), Report.id.desc())


async def get_report(session: AsyncSession, principal: Principal, report_id: int) -> Report:
    return await get_readable(session, Report, report_id, principal, name="Report")


def versions_query(report_id: int) -> Select[Any]:
    return (
        select(ReportVersion)
        .where(ReportVersion.report_id == report_id)
        .order_by(ReportVersion.version.desc())
    )


async def get_version(session: AsyncSession, report: Report, version: int | None) -> ReportVersion:
    stmt = select(ReportVersion).where(ReportVersion.report_id == report.id)
    if version is None:
        stmt = stmt.order_by(ReportVersion.version.desc()).limit(1)
    else:
        stmt = stmt.where(ReportVersion.version == version)
    found = await session.scalar(stmt)
    if found is None:
        raise NotFound(
            f"Version {version} of report" if version else "A version of report", report.id
        )
    return found


async def next_version(session: AsyncSession, report_id: int) -> int:
    top = await session.scalar(
        select(func.max(ReportVersion.version)).where(ReportVersion.report_id == report_id)
    )
    return int(top or 0) + 1


async def latest_versions(
    session: AsyncSession, reports: Sequence[Report]
) -> dict[int, ReportVersion]:
    wanted = [(r.id, r.latest_version) for r in reports if r.latest_version]
    if not wanted:
        return {}
    rows = await session.scalars(
        select(ReportVersion).where(
            ReportVersion.report_id.in_([i for i, _ in wanted]),
            ReportVersion.version.in_({v for _, v in wanted}),
        )
    )
    pairs = set(wanted)
    return {v.report_id: v for v in rows if (v.report_id, v.version) in pairs}


def file_name(report: Report, version: ReportVersion) -> str:
    period = report.period.replace("..", "_")
    return f"{report.kind}-{period}-v{version.version}.{EXTENSIONS[version.format]}"


def version_out(v: ReportVersion) -> VersionOut:
    return VersionOut(
        id=v.id,
        report_id=v.report_id,
        version=v.version,
        format=v.format,
        title=v.title,
        size_bytes=v.size_bytes,
        sha256=v.sha256,
        job_id=v.job_id,
        generated_by=v.generated_by,
        created_at=v.created_at,
        download_url=f"{API}/{v.report_id}/download?version={v.version}",
    )


def report_out(report: Report, latest: ReportVersion | None) -> ReportOut:
    return ReportOut(
        id=report.id,
        team_id=report.team_id,
        kind=report.kind,
        period=report.period,
        title=report.title,
        latest_version=report.latest_version,
        created_at=report.created_at,
        updated_at=report.updated_at,
        latest=version_out(latest) if latest else None,
        versions_url=f"{API}/{report.id}/versions",
    )


async def stream_checked(storage: StorageBackend, key: str, sha256: str) -> AsyncIterator[bytes]:
    """The stored file; if its bytes are not the ones recorded, the response breaks off
    instead of ending as if complete."""
    digest = hashlib.sha256()
    async with await storage.open_reader(key) as reader:
        while chunk := await reader.read():
            digest.update(chunk)
            yield chunk
    if digest.hexdigest() != sha256:
        raise Conflict("The stored report no longer matches its SHA-256")
