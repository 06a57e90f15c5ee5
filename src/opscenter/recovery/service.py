"""Backup status per target (RPO compliance, failures, storage) and recovery points:
read-only views over schedules, backups and external jobs. A backup an integrity check
found corrupt or missing (``backups.DAMAGED``) is no recovery point and no "last good".

The RPO rule: a target's RPO is the longest gap between two runs of its enabled
schedules (a daily schedule: 24 h; weekdays at 03:00: 72 h over the weekend). The age
of its newest completed backup, measured from when that backup began reading the data,
may exceed the RPO by a tolerance for scheduler lag (10 % of the RPO, at most 15 min);
beyond that the target is breached (red). An external job's RPO is its expected interval
and its tolerance its grace.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.backups import service as backups
from opscenter.core import cron
from opscenter.core.errors import NotFound
from opscenter.core.principal import Principal
from opscenter.core.scoping import readable
from opscenter.external_jobs import service as external_jobs
from opscenter.models import Backup, Schedule, Server
from opscenter.recovery.schemas import (
    BackupStatus,
    Health,
    RecoveryPointOut,
    RpoStatus,
    StatusSummary,
    TargetStatus,
)

COMPLETED = "completed"
DAMAGED = backups.DAMAGED
FAILED = ("failed", "interrupted")
FAILURE_WINDOW = timedelta(hours=24)
TOLERANCE_SHARE = 0.1
TOLERANCE_CAP = timedelta(minutes=15)
# Enough runs to see every gap of a weekly pattern, bounded in time for sparse ones.
INTERVAL_SAMPLE_RUNS = 60
INTERVAL_SAMPLE_SPAN = timedelta(days=800)
_HEALTH_ORDER = {"red": 0, "amber": 1, "green": 2, "gray": 3}


# -- recovery points ------------------------------------------------------------------------
def point_in_time(backup: Backup) -> datetime:
    return backup.started_at or backup.completed_at or backup.created_at


def recovery_point_out(backup: Backup) -> RecoveryPointOut:
    return RecoveryPointOut(
        **backups.backup_out(backup).model_dump(), point_in_time=point_in_time(backup)
    )


def recovery_points_query(
    principal: Principal,
    *,
    server_id: int | None,
    database_name: str | None,
    schedule_id: int | None,
    start: datetime | None,
    end: datetime | None,
) -> Select[Any]:
    return backups.filter_backups(
        backups.backups_query(principal),
        server_id=server_id,
        db_type=None,
        status=COMPLETED,
        database_name=database_name,
        schedule_id=schedule_id,
        start=start,
        end=end,
    ).where(Backup.verification_status.not_in(DAMAGED))


async def get_recovery_point(session: AsyncSession, principal: Principal, point_id: int) -> Backup:
    """A completed backup the caller may see and no check found damaged or gone; anything
    else is no recovery point (404)."""
    try:
        backup = await backups.get_backup(session, principal, point_id)
    except NotFound:
        backup = None
    if backup is None or backup.status != COMPLETED or backup.verification_status in DAMAGED:
        raise NotFound("Recovery point", point_id)
    return backup


# -- RPO ------------------------------------------------------------------------------------
def schedule_interval(cron_expression: str, timezone: str, now: datetime) -> timedelta | None:
    """The longest gap between consecutive runs from `now` on (None: it never runs)."""
    tz = cron.zone(timezone)
    previous = cron.next_after(cron_expression, tz, now)
    longest: timedelta | None = None
    for _ in range(INTERVAL_SAMPLE_RUNS):
        if previous is None or previous > now + INTERVAL_SAMPLE_SPAN:
            break
        following = cron.next_after(cron_expression, tz, previous)
        if following is None:
            break
        gap = following - previous
        longest = gap if longest is None or gap > longest else longest
        previous = following
    return longest


def tolerance(rpo: timedelta) -> timedelta:
    return min(rpo * TOLERANCE_SHARE, TOLERANCE_CAP)


def judge(
    *,
    last_good: datetime | None,
    allowed: timedelta | None,
    watched_since: datetime | None,
    now: datetime,
) -> RpoStatus:
    """`allowed` None: nothing enabled to measure against. Without any good backup the
    clock starts when the target came under watch (its schedule or job was created)."""
    if allowed is None:
        return "unscheduled"
    if last_good is not None:
        return "ok" if now - last_good <= allowed else "breached"
    if watched_since is not None and now - watched_since <= allowed:
        return "awaiting_first"
    return "breached"


def health_of(rpo_status: RpoStatus, failures: int) -> Health:
    if rpo_status == "breached":
        return "red"
    if rpo_status == "ok":
        return "amber" if failures else "green"
    return "gray"


def _seconds(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds())


# -- platform targets -----------------------------------------------------------------------
TargetKey = tuple[int, int | None, str]  # team, server, database name or path


@dataclass
class _Target:
    schedule_ids: list[int] = field(default_factory=list)
    rpo: timedelta | None = None
    watched_since: datetime | None = None
    last_good_id: int | None = None
    last_good_at: datetime | None = None
    failures: int = 0
    storage: int = 0
    points: int = 0


async def _platform_targets(
    session: AsyncSession, principal: Principal, now: datetime
) -> dict[TargetKey, _Target]:
    targets: dict[TargetKey, _Target] = defaultdict(_Target)
    schedules = (await session.scalars(readable(select(Schedule), Schedule, principal))).all()
    for schedule in schedules:
        target = targets[
            (
                schedule.team_id,
                schedule.server_id,
                schedule.database_name or schedule.source_path or "",
            )
        ]
        target.schedule_ids.append(schedule.id)
        if not schedule.enabled:
            continue
        interval = schedule_interval(schedule.cron_expression, schedule.timezone, now)
        if interval is None:
            continue
        target.rpo = interval if target.rpo is None else min(target.rpo, interval)
        if target.watched_since is None or schedule.created_at < target.watched_since:
            target.watched_since = schedule.created_at

    key_cols = (Backup.team_id, Backup.server_id, Backup.database_name)
    completed = Backup.status == COMPLETED
    good = and_(completed, Backup.verification_status.not_in(DAMAGED))
    recent_failure = and_(Backup.status.in_(FAILED), Backup.created_at >= now - FAILURE_WINDOW)
    # The team scope first, then the columns: with_only_columns keeps the WHERE.
    scoped = readable(select(Backup), Backup, principal)
    totals = await session.execute(
        scoped.with_only_columns(
            *key_cols,
            func.sum(case((recent_failure, 1), else_=0)),
            func.sum(case((completed, func.coalesce(Backup.size_bytes, 0)), else_=0)),
            # Copies of one dump in other storages are one recovery point (a copy whose
            # original was deleted has lost its copy_of_id and counts on its own).
            func.sum(case((and_(good, Backup.copy_of_id.is_(None)), 1), else_=0)),
        ).group_by(*key_cols)
    )
    for team_id, server_id, name, failures, storage, points in totals.all():
        target = targets[(team_id, server_id, name)]
        target.failures, target.storage, target.points = (
            int(failures or 0),
            int(storage or 0),
            int(points or 0),
        )

    point = func.coalesce(Backup.started_at, Backup.completed_at, Backup.created_at)
    ranked = (
        scoped.with_only_columns(
            *key_cols,
            Backup.id,
            point.label("point"),
            func.row_number()
            .over(partition_by=key_cols, order_by=(point.desc(), Backup.id.desc()))
            .label("rank"),
        )
        .where(good)
        .subquery()
    )
    newest = await session.execute(
        select(
            ranked.c.team_id,
            ranked.c.server_id,
            ranked.c.database_name,
            ranked.c.id,
            ranked.c.point,
        ).where(ranked.c.rank == 1)
    )
    for team_id, server_id, name, backup_id, at in newest.all():
        target = targets[(team_id, server_id, name)]
        target.last_good_id, target.last_good_at = backup_id, at
    return targets


def _platform_status(
    key: TargetKey, target: _Target, server_names: dict[int, str], now: datetime
) -> TargetStatus:
    team_id, server_id, name = key
    allowed = target.rpo + tolerance(target.rpo) if target.rpo is not None else None
    rpo_status = judge(
        last_good=target.last_good_at,
        allowed=allowed,
        watched_since=target.watched_since,
        now=now,
    )
    server_name = server_names.get(server_id) if server_id is not None else None
    return TargetStatus(
        kind="platform",
        name=f"{server_name or 'removed server'}/{name}",
        team_id=team_id,
        server_id=server_id,
        server_name=server_name,
        database_name=name,
        schedule_ids=sorted(target.schedule_ids),
        last_good_backup_id=target.last_good_id,
        last_good_backup_at=target.last_good_at,
        age_seconds=_seconds(now - target.last_good_at) if target.last_good_at else None,
        rpo_seconds=_seconds(target.rpo),
        allowed_age_seconds=_seconds(allowed),
        rpo_status=rpo_status,
        health=health_of(rpo_status, target.failures),
        failures_24h=target.failures,
        storage_used_bytes=target.storage,
        recovery_points=target.points,
    )


# -- external jobs ----------------------------------------------------------------------------
async def _external_statuses(
    session: AsyncSession, principal: Principal, now: datetime
) -> list[TargetStatus]:
    jobs = (await session.scalars(external_jobs.jobs_query(principal))).all()
    counts = await external_jobs.report_counts(session, [j.id for j in jobs], now - FAILURE_WINDOW)
    statuses = []
    for job in jobs:
        rpo = timedelta(minutes=job.expected_interval_minutes)
        allowed = rpo + timedelta(minutes=job.grace_minutes) if job.enabled else None
        rpo_status = judge(
            last_good=job.last_success_at, allowed=allowed, watched_since=job.created_at, now=now
        )
        count = counts.get(job.id, external_jobs.ReportCounts())
        statuses.append(
            TargetStatus(
                kind="external",
                name=f"{job.name}@{job.host}" if job.host else job.name,
                team_id=job.team_id,
                external_job_id=job.id,
                host=job.host,
                last_good_backup_at=job.last_success_at,
                age_seconds=_seconds(now - job.last_success_at) if job.last_success_at else None,
                rpo_seconds=_seconds(rpo),
                allowed_age_seconds=_seconds(allowed),
                rpo_status=rpo_status,
                health=health_of(rpo_status, count.failures_recent),
                failures_24h=count.failures_recent,
                storage_used_bytes=job.last_size_bytes or 0,
                recovery_points=count.successes,
            )
        )
    return statuses


# -- the view -------------------------------------------------------------------------------
async def backup_status(session: AsyncSession, principal: Principal, now: datetime) -> BackupStatus:
    platform = await _platform_targets(session, principal, now)
    server_ids = {key[1] for key in platform if key[1] is not None}
    server_names: dict[int, str] = {}
    if server_ids:
        rows = await session.execute(
            select(Server.id, Server.name).where(Server.id.in_(server_ids))
        )
        server_names = {server_id: name for server_id, name in rows.all()}
    items = [_platform_status(key, t, server_names, now) for key, t in platform.items()]
    items += await _external_statuses(session, principal, now)
    items.sort(key=lambda t: (_HEALTH_ORDER[t.health], t.name, t.kind))
    colours = {colour: sum(1 for t in items if t.health == colour) for colour in _HEALTH_ORDER}
    summary = StatusSummary(
        generated_at=now,
        targets=len(items),
        green=colours["green"],
        amber=colours["amber"],
        red=colours["red"],
        gray=colours["gray"],
        failures_24h=sum(t.failures_24h for t in items),
        storage_used_bytes=sum(t.storage_used_bytes for t in items),
    )
    return BackupStatus(summary=summary, targets=items)
