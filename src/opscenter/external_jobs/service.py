"""External jobs: each report extends a job's history; a job whose next report is late is
overdue, raised once per overdue period (a dead man's switch), recovered by a report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, Select, and_, case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import as_utc, isoformat_z
from opscenter.core.errors import Conflict, InvalidInput, NotFound
from opscenter.core.events import Event
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.external_jobs.schemas import (
    DEFAULT_GRACE_MINUTES,
    DEFAULT_INTERVAL_MINUTES,
    ExternalJobCreate,
    ExternalJobOut,
    ExternalJobUpdate,
    ReportIn,
    ReportOut,
)
from opscenter.models import ExternalJob, ExternalJobReport, Team

RECENT_REPORTS = 20
# Reporting hosts' clocks drift; a timestamp further ahead than this is a broken clock.
CLOCK_SKEW = timedelta(hours=1)
FAILED = "failed"
SUCCESS = "success"


# -- rendering and queries ------------------------------------------------------------------
def due_at(job: ExternalJob) -> datetime:
    """When the next report must have arrived: last report (or creation) + interval + grace."""
    reference = job.last_report_at or job.created_at
    return reference + timedelta(minutes=job.expected_interval_minutes + job.grace_minutes)


def is_overdue(job: ExternalJob, now: datetime) -> bool:
    return job.enabled and now > due_at(job)


def job_out(job: ExternalJob, now: datetime) -> ExternalJobOut:
    return ExternalJobOut(
        id=job.id,
        team_id=job.team_id,
        name=job.name,
        host=job.host,
        expected_interval_minutes=job.expected_interval_minutes,
        grace_minutes=job.grace_minutes,
        enabled=job.enabled,
        last_report_at=job.last_report_at,
        last_status=job.last_status,
        last_success_at=job.last_success_at,
        last_size_bytes=job.last_size_bytes,
        next_report_due_at=due_at(job),
        overdue=is_overdue(job, now),
        overdue_since=job.overdue_since,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


def report_out(report: ExternalJobReport) -> ReportOut:
    return ReportOut(
        id=report.id,
        external_job_id=report.external_job_id,
        status=report.status,
        started_at=report.started_at,
        completed_at=report.completed_at,
        size_bytes=report.size_bytes,
        duration_seconds=report.duration_seconds,
        message=report.message,
        received_at=report.created_at,
    )


def jobs_query(principal: Principal) -> Select[Any]:
    return readable(select(ExternalJob), ExternalJob, principal).order_by(ExternalJob.id)


def filter_jobs(stmt: Select[Any], *, enabled: bool | None, q: str | None) -> Select[Any]:
    if enabled is not None:
        stmt = stmt.where(ExternalJob.enabled.is_(enabled))
    if q:
        needle = q.lower()
        stmt = stmt.where(
            func.lower(ExternalJob.name).contains(needle, autoescape=True)
            | func.lower(ExternalJob.host).contains(needle, autoescape=True)
        )
    return stmt


def reports_query(job_id: int) -> Select[Any]:
    return (
        select(ExternalJobReport)
        .where(ExternalJobReport.external_job_id == job_id)
        .order_by(ExternalJobReport.id.desc())
    )


async def get_job(session: AsyncSession, principal: Principal, job_id: int) -> ExternalJob:
    return await get_readable(session, ExternalJob, job_id, principal, name="External job")


async def recent_reports(
    session: AsyncSession, job_id: int, limit: int = RECENT_REPORTS
) -> list[ExternalJobReport]:
    return list((await session.scalars(reports_query(job_id).limit(limit))).all())


@dataclass(frozen=True)
class ReportCounts:
    failures_recent: int = 0
    successes: int = 0


async def report_counts(
    session: AsyncSession, job_ids: list[int], since: datetime
) -> dict[int, ReportCounts]:
    """Per job: failed reports received since `since`, and success reports ever."""
    if not job_ids:
        return {}
    recent_failure = and_(ExternalJobReport.status == FAILED, ExternalJobReport.created_at >= since)
    rows = await session.execute(
        select(
            ExternalJobReport.external_job_id,
            func.sum(case((recent_failure, 1), else_=0)),
            func.sum(case((ExternalJobReport.status == SUCCESS, 1), else_=0)),
        )
        .where(ExternalJobReport.external_job_id.in_(job_ids))
        .group_by(ExternalJobReport.external_job_id)
    )
    return {
        job_id: ReportCounts(int(failures or 0), int(successes or 0))
        for job_id, failures, successes in rows.all()
    }


# -- create, update, delete -----------------------------------------------------------------
def reporting_team(principal: Principal) -> int:
    """The team a job created by a report (or without team_id) belongs to: the caller's first."""
    team_id = min(principal.team_ids, default=None)
    if team_id is None:
        raise InvalidInput("You belong to no team; an external job must belong to one")
    return team_id


async def _ensure_unique(session: AsyncSession, team_id: int, name: str, host: str) -> None:
    taken = await session.scalar(
        select(ExternalJob.id).where(
            ExternalJob.team_id == team_id, ExternalJob.name == name, ExternalJob.host == host
        )
    )
    if taken is not None:
        where = f" on host '{host}'" if host else ""
        raise Conflict(f"External job '{name}'{where} exists already (id {taken})")


async def create_job(
    session: AsyncSession, principal: Principal, data: ExternalJobCreate
) -> ExternalJob:
    team_id = data.team_id if data.team_id is not None else reporting_team(principal)
    check_team_access(principal, team_id)
    if await session.get(Team, team_id) is None:  # the all-teams scope passes any id
        raise NotFound("Team", team_id)
    await _ensure_unique(session, team_id, data.name, data.host)
    job = ExternalJob(
        team_id=team_id,
        name=data.name,
        host=data.host,
        expected_interval_minutes=data.expected_interval_minutes,
        grace_minutes=data.grace_minutes,
        enabled=data.enabled,
        created_by=principal.user_id or None,
    )
    session.add(job)
    await session.flush()
    return job


async def update_job(
    session: AsyncSession, principal: Principal, job_id: int, data: ExternalJobUpdate
) -> tuple[ExternalJob, dict[str, Any]]:
    job = await get_job(session, principal, job_id)
    changed: dict[str, Any] = {}
    for name in sorted(data.model_fields_set):
        value = getattr(data, name)
        if getattr(job, name) != value:
            changed[name] = value
            setattr(job, name, value)
    # A new interval or a re-enabled job starts a new period: the next check judges afresh.
    if changed:
        job.overdue_since = None
        await session.flush()
    return job, changed


async def delete_job(session: AsyncSession, principal: Principal, job_id: int) -> ExternalJob:
    """The job and its report history."""
    job = await get_job(session, principal, job_id)
    await session.execute(
        delete(ExternalJobReport).where(ExternalJobReport.external_job_id == job.id)
    )
    await session.delete(job)
    await session.flush()
    return job


# -- reports --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recorded:
    job: ExternalJob
    report: ExternalJobReport
    created_job: bool
    recovered: Event | None


async def _job_for_report(
    session: AsyncSession, principal: Principal, data: ReportIn
) -> tuple[ExternalJob, bool]:
    """The caller's job of this name and host, created with the defaults if there is none."""
    stmt = readable(
        select(ExternalJob).where(ExternalJob.name == data.job_name, ExternalJob.host == data.host),
        ExternalJob,
        principal,
    ).order_by(ExternalJob.team_id)
    job = (await session.scalars(stmt)).first()
    if job is not None:
        return job, False
    job = ExternalJob(
        team_id=reporting_team(principal),
        name=data.job_name,
        host=data.host,
        expected_interval_minutes=DEFAULT_INTERVAL_MINUTES,
        grace_minutes=DEFAULT_GRACE_MINUTES,
        created_by=principal.user_id or None,
    )
    try:
        async with session.begin_nested():
            session.add(job)
    except IntegrityError:
        # A concurrent first report created it a moment ago: use that one.
        return (await session.scalars(stmt)).one(), False
    return job, True


def _check_clock(data: ReportIn, now: datetime) -> None:
    for name in ("started_at", "completed_at"):
        value = getattr(data, name)
        if value is not None and as_utc(value) > now + CLOCK_SKEW:
            raise InvalidInput(
                f"{name} is more than an hour in the future; check the reporting host's clock"
            )


async def record_report(
    session: AsyncSession, principal: Principal, data: ReportIn, now: datetime
) -> Recorded:
    _check_clock(data, now)
    job, created = await _job_for_report(session, principal, data)
    started = as_utc(data.started_at) if data.started_at is not None else None
    completed = as_utc(data.completed_at) if data.completed_at is not None else None
    duration = data.duration_seconds
    if duration is None and started is not None and completed is not None:
        duration = (completed - started).total_seconds()
    report = ExternalJobReport(
        external_job_id=job.id,
        status=data.status,
        started_at=started,
        completed_at=completed,
        size_bytes=data.size_bytes,
        duration_seconds=duration,
        message=data.message,
        api_key_id=principal.api_key_id,
        created_at=now,
    )
    session.add(report)
    job.last_report_at = now
    job.last_status = data.status
    if data.status == SUCCESS:
        # The recovery point is when the backup began; a clock ahead of ours is clamped.
        job.last_success_at = min(started or completed or now, now)
        if data.size_bytes is not None:
            job.last_size_bytes = data.size_bytes
    recovered = None
    if job.overdue_since is not None:
        recovered = Event(
            "external_job.recovered",
            {
                "external_job_id": job.id,
                "job_name": job.name,
                "host": job.host,
                "status": data.status,
                "overdue_since": isoformat_z(job.overdue_since),
                "report_at": isoformat_z(now),
            },
            team_id=job.team_id,
        )
        job.overdue_since = None
    await session.flush()
    return Recorded(job=job, report=report, created_job=created, recovered=recovered)


# -- the dead man's switch --------------------------------------------------------------------
def overdue_event(job: ExternalJob, now: datetime) -> Event:
    # Never heard from, or last heard failing and now silent: nothing says a backup exists.
    severity = "critical" if job.last_status in (None, FAILED) else "warning"
    where = f" on {job.host}" if job.host else ""
    since = isoformat_z(job.last_report_at) if job.last_report_at else None
    return Event(
        "external_job.overdue",
        {
            "external_job_id": job.id,
            "job_name": job.name,
            "host": job.host,
            "last_report_at": since,
            "expected_interval_minutes": job.expected_interval_minutes,
            "severity": severity,
            "message": (
                f"External job '{job.name}'{where} has not reported "
                + (f"since {since}" if since else "since it was registered")
                + f" (expected every {job.expected_interval_minutes} min,"
                f" {job.grace_minutes} min grace)"
            ),
        },
        team_id=job.team_id,
        timestamp=isoformat_z(now),
    )


async def raise_overdue(session: AsyncSession, now: datetime) -> list[Event]:
    """Mark every newly overdue job and return one event each; a job already marked stays
    quiet until a report clears it. The conditional UPDATE is the claim: with several
    processes checking, one wins, and a report that arrived meanwhile wins over both."""
    candidates = (
        await session.scalars(
            select(ExternalJob)
            .where(ExternalJob.enabled.is_(True), ExternalJob.overdue_since.is_(None))
            .order_by(ExternalJob.id)
        )
    ).all()
    events: list[Event] = []
    for job in candidates:
        if not is_overdue(job, now):
            continue
        unchanged = (
            ExternalJob.last_report_at.is_(None)
            if job.last_report_at is None
            else ExternalJob.last_report_at == job.last_report_at
        )
        result = await session.execute(
            update(ExternalJob)
            .where(ExternalJob.id == job.id, ExternalJob.overdue_since.is_(None), unchanged)
            .values(overdue_since=now)
            .execution_options(synchronize_session=False)
        )
        assert isinstance(result, CursorResult)
        if result.rowcount == 1:
            events.append(overdue_event(job, now))
    return events
