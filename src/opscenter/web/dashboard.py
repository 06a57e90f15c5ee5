"""The dashboard's numbers, computed from the same team-scoped service queries the API
serves (backups, schedules, servers, storage): nothing here is stored or duplicated."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.backups import service as backups
from opscenter.core import cron
from opscenter.core.principal import Principal
from opscenter.models import Backup, BackupStatus
from opscenter.schedules import service as schedules
from opscenter.schedules.schemas import ScheduleOut
from opscenter.servers import service as servers
from opscenter.storage import service as storage

RECENT_BACKUPS = 2000  # enough history for the charts without reading a whole catalog
CHART_POINTS = 30
# A target is late when its last good backup is older than this many schedule intervals.
AMBER_INTERVALS, RED_INTERVALS = 1.5, 3.0
SHRINK_RATIO = 0.5  # a backup under half the median of its predecessors stands out


@dataclass
class Target:
    server_id: int | None
    server_name: str
    database: str
    schedule: ScheduleOut | None = None
    last_good: Backup | None = None
    last_status: str | None = None
    light: str = "grey"  # green | amber | red | grey (no schedule to judge against)
    light_reason: str = ""
    shrunk: bool = False
    history: list[Backup] = field(default_factory=list)  # completed, oldest first


@dataclass
class Dashboard:
    targets: list[Target]
    failures: list[Backup]
    storage_used: list[tuple[str, int, int]]  # provider name, bytes, artifact count
    running: list[Backup]
    charts: list[dict[str, Any]]


def _interval(schedule: ScheduleOut, now: datetime) -> timedelta | None:
    tz = cron.zone(schedule.timezone)
    first = cron.next_after(schedule.cron_expression, tz, now)
    second = first and cron.next_after(schedule.cron_expression, tz, first)
    return second - first if first and second else None


def _judge(target: Target, now: datetime) -> None:
    """The RPO light: the age of the last good backup against the schedule's interval."""
    if target.schedule is None or not target.schedule.enabled:
        target.light, target.light_reason = "grey", "no active schedule"
        return
    interval = _interval(target.schedule, now)
    if target.last_good is None or target.last_good.completed_at is None:
        target.light, target.light_reason = "red", "no good backup yet"
        return
    if interval is None:
        target.light, target.light_reason = "grey", "the schedule never fires again"
        return
    late = (now - target.last_good.completed_at) / interval
    if late <= AMBER_INTERVALS:
        target.light, target.light_reason = "green", "within its schedule"
    elif late <= RED_INTERVALS:
        target.light, target.light_reason = "amber", f"{late:.1f} intervals old"
    else:
        target.light, target.light_reason = "red", f"{late:.1f} intervals old"


def _shrunk(history: list[Backup]) -> bool:
    sizes = [b.size_bytes for b in history if b.size_bytes]
    if len(sizes) < 3:
        return False
    return sizes[-1] < SHRINK_RATIO * statistics.median(sizes[:-1])


async def build(session: AsyncSession, principal: Principal, now: datetime) -> Dashboard:
    rows = list(
        (await session.scalars(backups.backups_query(principal).limit(RECENT_BACKUPS))).all()
    )
    server_names = {
        s.id: s.name for s in (await session.scalars(servers.servers_query(principal))).all()
    }
    providers = {
        p.id: p.name for p in (await session.scalars(storage.providers_query(principal))).all()
    }
    all_schedules = [
        schedules.schedule_out(s)
        for s in (await session.scalars(schedules.schedules_query(principal))).all()
    ]

    targets: dict[tuple[int | None, str], Target] = {}

    def target(server_id: int | None, database: str) -> Target:
        key = (server_id, database)
        if key not in targets:
            name = server_names.get(server_id, "(deleted server)") if server_id else "(no server)"
            targets[key] = Target(server_id, name, database)
        return targets[key]

    for schedule in all_schedules:
        t = target(schedule.server_id, schedule.database_name or schedule.source_path or "")
        if t.schedule is None or (schedule.enabled and not t.schedule.enabled):
            t.schedule = schedule
    for backup in rows:  # newest first
        if backup.copy_of_id is not None:  # the same dump in another storage
            continue
        t = target(backup.server_id, backup.database_name)
        t.last_status = t.last_status or backup.status
        if backup.status == BackupStatus.COMPLETED:
            t.last_good = t.last_good or backup
            if len(t.history) < CHART_POINTS:
                t.history.append(backup)
    used: dict[int, list[int]] = {}
    for backup in rows:
        if backup.status == BackupStatus.COMPLETED and backup.size_bytes:
            entry = used.setdefault(backup.storage_id, [0, 0])
            entry[0] += backup.size_bytes
            entry[1] += 1
    for t in targets.values():
        t.history.reverse()
        t.shrunk = _shrunk(t.history)
        _judge(t, now)
    ordered = sorted(targets.values(), key=lambda t: (t.server_name, t.database))
    return Dashboard(
        targets=ordered,
        failures=[
            b for b in rows if b.status == "failed" and b.created_at >= now - timedelta(hours=24)
        ],
        storage_used=[
            (providers.get(pid, f"provider {pid}"), total, count)
            for pid, (total, count) in sorted(used.items())
        ],
        running=[b for b in rows if b.status in backups.ACTIVE],
        charts=[
            {
                "label": f"{t.server_name} / {t.database}",
                "shrunk": t.shrunk,
                "points": [
                    {
                        "at": b.completed_at.isoformat() if b.completed_at else None,
                        "size": b.size_bytes,
                        "duration": b.duration_seconds,
                    }
                    for b in t.history
                ],
            }
            for t in ordered
            if t.history
        ],
    )
