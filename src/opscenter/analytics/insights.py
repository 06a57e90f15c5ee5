"""Insights: anomalies found, on request, by median and MAD per target.

For each target (server, database) the last SERIES finished backups of the last
LOOKBACK_DAYS, and when it was last verified, are read in one windowed query; a
completed backup whose size is more than Z_LIMIT robust standard deviations (1.4826 MAD)
from the target's median is a size anomaly, one whose duration is that far above it a
duration jump (Iglewicz and Hoaglin's 3.5). A failing streak is STREAK or more failures
in a row up to the newest; a verification gap is an active target none of whose backups
of the last GAP_DAYS were verified. Incidents per team per calendar week: this week far
above the median of the previous weeks is a rise.

Each insight has a fingerprint: sha256 of its kind, its subject and the anomalous data
point (a backup id, the first failure of the streak, the last verified backup, the week),
so a dismissal (`analytics_dismissals`) outlives the recomputation."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Subquery, and_, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from opscenter.analytics import figures as fig
from opscenter.analytics.figures import MONDAY_ORIGIN, WEEK, Period
from opscenter.analytics.schemas import InsightOut
from opscenter.analytics.service import scoped, server_names
from opscenter.core import stats
from opscenter.core.cache import TtlCache
from opscenter.core.clock import utcnow
from opscenter.core.errors import Conflict, NotFound
from opscenter.core.logging import get_logger
from opscenter.core.principal import Principal
from opscenter.core.scoping import readable
from opscenter.models import Backup, BackupStatus, Incident, InsightDismissal

LOOKBACK_DAYS = 90
SERIES = 30
MIN_SERIES = 5
Z_LIMIT = 3.5
#: A deviation below these is never unusual, however regular the series (MAD 0).
SIZE_FLOOR = 0.05  # of the median size
DURATION_FLOOR = 0.10  # of the median duration
DURATION_FLOOR_SECONDS = 5.0
STREAK = 3
GAP_DAYS = 14
INCIDENT_WEEKS = 8
MIN_INCIDENTS = 3
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
#: The dashboard shows insights about this old at most (while newer ones are computed):
#: computing them reads every target's recent backups, too much to wait for on each refresh
#: of the dashboard; older than STALE_SECONDS they are computed in the request again.
#: `/insights` always computes.
RECENT_SECONDS = 60.0
STALE_SECONDS = 600.0
API = "/api/v1"
log = get_logger("opscenter.analytics")


def fingerprint(kind: str, subject: str, point: object) -> str:
    return hashlib.sha256(f"{kind}|{subject}|{point}".encode()).hexdigest()


@dataclass
class _Target:
    """A target's finished backups of the last LOOKBACK_DAYS: the newest SERIES of them,
    newest first, column by column, and when its backups were completed and verified."""

    team_id: int
    server_id: int | None
    database_name: str
    first_done: datetime | None = None
    last_done: datetime | None = None
    verified_id: int | None = None
    verified_at: datetime | None = None
    ids: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    sizes: list[int | None] = field(default_factory=list)
    durations: list[float | None] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return f"{self.server_id}/{self.database_name}"


@dataclass
class _Flag:
    """An unusual backup of a target: a size or duration far from its median, or the first
    failure of a streak. Only the flagged backups' times are read, after."""

    kind: str
    target: _Target
    backup_id: int
    value: float
    center: float | None = None
    spread: float | None = None
    score: float | None = None
    samples: int = 0
    newest_id: int = 0


def _insight(
    kind: str,
    severity: str,
    title: str,
    detail: str,
    target: _Target | None,
    point: object,
    *,
    team_id: int,
    at: datetime | None,
    links: list[str],
    value: float | None = None,
    center: float | None = None,
    spread: float | None = None,
    score: float | None = None,
    subject: str | None = None,
) -> InsightOut:
    return InsightOut(
        fingerprint=fingerprint(kind, subject or (target.subject if target else ""), point),
        kind=kind,
        severity=severity,
        title=title,
        detail=detail,
        team_id=team_id,
        server_id=target.server_id if target else None,
        database_name=target.database_name if target else None,
        at=at,
        value=value,
        median=center,
        mad=spread,
        score=None if score is None else round(score, 2),
        links=links,
        dismissed=False,
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _outliers(target: _Target, *, sizes: bool) -> list[_Flag]:
    values = target.sizes if sizes else target.durations
    done = [
        (i, float(v))
        for i, status, v in zip(target.ids, target.statuses, values, strict=True)
        if status == BackupStatus.COMPLETED and v is not None
    ]
    if len(done) < MIN_SERIES:
        return []
    center = stats.median([v for _, v in done])
    spread = stats.mad([v for _, v in done], center)
    floor = (
        SIZE_FLOOR * abs(center)
        if sizes
        else max(DURATION_FLOOR * abs(center), DURATION_FLOOR_SECONDS)
    )
    sigma = stats.robust_sigma(spread, max(floor, 1e-9))
    found = []
    for i, value in done:
        z = (value - center) / sigma  # stats.robust_z, its sigma computed once per series
        if abs(z) <= Z_LIMIT or (not sizes and z < 0):
            continue
        kind = "size_anomaly" if sizes else "duration_jump"
        found.append(_Flag(kind, target, i, value, center, spread, z, len(done)))
    return found


def _streak(target: _Target) -> list[_Flag]:
    length = next(
        (n for n, status in enumerate(target.statuses) if status == BackupStatus.COMPLETED),
        len(target.statuses),
    )
    if length < STREAK:
        return []
    first = target.ids[length - 1]
    return [_Flag("failing_streak", target, first, float(length), newest_id=target.ids[0])]


def _described(flag: _Flag, created: datetime, completed: datetime | None) -> InsightOut:
    target, value = flag.target, flag.value
    where = f"{target.database_name} (server {target.server_id})"
    if flag.kind == "failing_streak":
        return _insight(
            flag.kind,
            "critical" if value >= 2 * STREAK else "warning",
            f"{value:.0f} failed backups in a row of {where}",
            f"every backup since backup {flag.backup_id} failed; the newest is backup "
            f"{flag.newest_id}",
            target,
            flag.backup_id,
            team_id=target.team_id,
            at=created,
            links=[f"{API}/backups/{flag.newest_id}", f"{_target_link(target)}&status=failed"],
            value=value,
        )
    assert flag.center is not None and flag.score is not None
    center, z, n = flag.center, flag.score, flag.samples
    if flag.kind == "size_anomaly":
        smaller = value < center
        severity = "warning" if smaller else "info"
        title = (
            f"Backup {flag.backup_id} of {where} is far "
            f"{'smaller' if smaller else 'larger'} than usual"
        )
        detail = (
            f"{_size(value)} against a median of {_size(center)} over the last {n} "
            f"completed backups (robust z {z:.1f})"
        )
    else:
        severity = "warning"
        title = f"Backup {flag.backup_id} of {where} took far longer than usual"
        detail = (
            f"{value:.0f} s against a median of {center:.0f} s over the last {n} "
            f"completed backups (robust z {z:.1f})"
        )
    return _insight(
        flag.kind,
        severity,
        title,
        detail,
        target,
        flag.backup_id,
        team_id=target.team_id,
        at=completed or created,
        links=[f"{API}/backups/{flag.backup_id}", _target_link(target)],
        value=value,
        center=center,
        spread=flag.spread,
        score=z,
    )


def _target_link(target: _Target) -> str:
    server = f"server_id={target.server_id}&" if target.server_id else ""
    return f"{API}/backups?{server}database_name={target.database_name}"


def _gap(target: _Target, now: datetime) -> list[InsightOut]:
    """An active, old enough target with no verified backup in the last GAP_DAYS."""
    since = now - timedelta(days=GAP_DAYS)
    first, last, vid, vat = (
        target.first_done,
        target.last_done,
        target.verified_id,
        target.verified_at,
    )
    if first is None or last is None or first > since or last < since:
        return []  # new, or no longer backed up: nothing to verify regularly
    if vat is not None and vat >= since:
        return []
    db, sid = target.database_name, target.server_id
    return [
        _insight(
            "verification_gap",
            "warning",
            f"No backup of {db} (server {sid}) verified in {GAP_DAYS} days",
            f"none of its backups of the last {LOOKBACK_DAYS} days was verified"
            if vid is None or vat is None
            else f"the last verified backup is backup {vid}, made {vat:%Y-%m-%d}",
            target,
            vid or 0,
            team_id=target.team_id,
            at=vat,
            links=[_target_link(target), f"{API}/verify"],
        )
    ]


async def _incident_rises(
    session: AsyncSession, principal: Principal, now: datetime
) -> list[InsightOut]:
    """This calendar week's incidents per team against the INCIDENT_WEEKS weeks before."""
    this_week = (int(now.timestamp()) - MONDAY_ORIGIN) // WEEK
    origin = MONDAY_ORIGIN + (this_week - INCIDENT_WEEKS) * WEEK
    start = datetime.fromtimestamp(origin, UTC)
    week = fig.bucket(session, Incident.created_at, float(origin), WEEK).label("w")
    stmt = (
        select(Incident.team_id, week, func.count())
        .where(Incident.created_at >= start, Incident.created_at <= now)
        .group_by(Incident.team_id, week)
    )
    counts: dict[int, dict[int, int]] = defaultdict(dict)
    for team, w, n in (await session.execute(scoped(stmt, Incident, principal))).all():
        counts[int(team)][int(w)] = int(n)
    found = []
    for team, weeks in counts.items():
        current = weeks.get(INCIDENT_WEEKS, 0)
        before = [float(weeks.get(i, 0)) for i in range(INCIDENT_WEEKS)]
        center = stats.median(before)
        spread = stats.mad(before, center)
        z = stats.robust_z(float(current), center, spread, max(1.0, 0.25 * center))
        if current < MIN_INCIDENTS or z <= Z_LIMIT:
            continue
        week_start = start + timedelta(days=7 * INCIDENT_WEEKS)
        found.append(
            _insight(
                "rising_incidents",
                "warning",
                f"{current} incidents this week in team {team}",
                f"the median of the {INCIDENT_WEEKS} weeks before was {center:.0f} "
                f"(robust z {z:.1f})",
                None,
                f"{week_start:%Y-%m-%d}",
                team_id=team,
                at=week_start,
                links=[
                    f"{API}/infra/incidents",
                    f"{API}/analytics/trends?metric=incidents&window=63d&step=7d",
                ],
                value=float(current),
                center=center,
                spread=spread,
                score=z,
                subject=f"team:{team}",
            )
        )
    return found


def _ranked(principal: Principal, now: datetime) -> Subquery:
    """The caller's finished backups of the last LOOKBACK_DAYS, ranked per target from the
    newest."""
    rank = func.row_number().over(
        partition_by=(Backup.server_id, Backup.database_name), order_by=Backup.id.desc()
    )
    stmt = select(
        Backup.id,
        Backup.team_id,
        Backup.server_id,
        Backup.database_name,
        Backup.status,
        Backup.size_bytes,
        Backup.duration_seconds,
        Backup.created_at,
        Backup.verification_status,
        rank.label("rank"),
    ).where(fig.backup_filter(Period(now - timedelta(days=LOOKBACK_DAYS), now)))
    return scoped(stmt, Backup, principal).subquery()


def _history(b: Subquery) -> list[Any]:
    """Per target: the newest backup's team, its first and last completed backup, its last
    verified one."""
    done = b.c.status == BackupStatus.COMPLETED
    verified = and_(done, b.c.verification_status.in_(fig.VERIFIED))
    return [
        b.c.server_id,
        b.c.database_name,
        func.max(b.c.team_id).filter(b.c.rank == 1).label("team_id"),
        func.min(b.c.created_at).filter(done).label("first_done"),
        func.max(b.c.created_at).filter(done).label("last_done"),
        func.max(b.c.id).filter(verified).label("verified_id"),
        func.max(b.c.created_at).filter(verified).label("verified_at"),
    ]


async def _targets(session: AsyncSession, principal: Principal, now: datetime) -> list[_Target]:
    """Every target's series and history. PostgreSQL gathers each target's series into
    arrays: a row per target, not one per backup, to decode and keep; SQLite, without
    ordered aggregates, reads the series' rows."""
    b = _ranked(principal, now)
    newest = b.c.rank <= SERIES
    by_target = (b.c.server_id, b.c.database_name)
    if session.get_bind().dialect.name == "postgresql":

        def series(column: Any) -> Any:
            return func.array_agg(aggregate_order_by(column, b.c.id.desc())).filter(newest)

        stmt = select(
            *_history(b),
            series(b.c.id).label("ids"),
            series(b.c.status).label("statuses"),
            series(b.c.size_bytes).label("sizes"),
            series(b.c.duration_seconds).label("durations"),
        ).group_by(*by_target)
        return [_Target(**row._mapping) for row in await session.execute(stmt)]
    history = await session.execute(select(*_history(b)).group_by(*by_target))
    targets = {(r.server_id, r.database_name): _Target(**r._mapping) for r in history}
    rows = await session.execute(
        select(*by_target, b.c.id, b.c.status, b.c.size_bytes, b.c.duration_seconds)
        .where(newest)
        .order_by(b.c.rank)
    )
    for sid, db, id_, status, size, duration in rows:
        target = targets[(sid, db)]
        target.ids.append(id_)
        target.statuses.append(status)
        target.sizes.append(size)
        target.durations.append(duration)
    return list(targets.values())


async def _times(
    session: AsyncSession, ids: set[int]
) -> dict[int, tuple[datetime, datetime | None]]:
    """When the flagged backups were made and completed."""
    if not ids:
        return {}
    rows = await session.execute(
        select(Backup.id, Backup.created_at, Backup.completed_at).where(Backup.id.in_(ids))
    )
    return {i: (created, completed) for i, created, completed in rows}


async def compute(session: AsyncSession, principal: Principal, now: datetime) -> list[InsightOut]:
    """Every insight the caller's teams have, dismissed ones marked, most severe first."""
    targets = await _targets(session, principal, now)
    flags = [
        flag
        for t in targets
        for flag in (*_outliers(t, sizes=True), *_outliers(t, sizes=False), *_streak(t))
    ]
    times = await _times(session, {f.backup_id for f in flags})
    # A flagged backup deleted since it was read has nothing left to show.
    found = [_described(f, *times[f.backup_id]) for f in flags if f.backup_id in times]
    found += [gap for t in targets for gap in _gap(t, now)]
    found += await _incident_rises(session, principal, now)
    names = await server_names(session, {i.server_id for i in found if i.server_id})
    for i in found:
        if i.server_id in names:
            i.title = i.title.replace(f"(server {i.server_id})", f"on {names[i.server_id]}")
    dismissed = await _dismissed(session, principal, {i.fingerprint for i in found})
    for i in found:
        if (key := (i.team_id, i.fingerprint)) in dismissed:
            i.dismissed, i.dismissed_at = True, dismissed[key]
    epoch = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda i: i.at or epoch, reverse=True)
    found.sort(key=lambda i: SEVERITY_RANK[i.severity])
    return found


_Key = tuple[str, bool, frozenset[int]]
#: Per database and teams: when computed (monotonic seconds), and what.
_recent: TtlCache[_Key, tuple[float, list[InsightOut]]] = TtlCache(STALE_SECONDS, 1000)
_refreshing: dict[_Key, asyncio.Task[None]] = {}
#: Moves on at each dismissal: a computation that began before one does not keep its answer.
_dismissals = 0


async def recent(session: AsyncSession, principal: Principal, now: datetime) -> list[InsightOut]:
    """`compute`, or its answer for the same teams of the same database: one older than
    RECENT_SECONDS is answered while a fresh one is computed beside the request, in a
    session of its own; none, or one older than STALE_SECONDS, is computed now. A dismissal
    in this process forgets them."""
    key = (
        str(session.get_bind().engine.url),
        principal.sees_all_teams,
        frozenset() if principal.sees_all_teams else principal.team_ids,
    )
    entry = _recent.get(key)
    if entry is None:
        found = await compute(session, principal, now)
        _recent.put(key, (time.monotonic(), found))
        return found
    made, found = entry
    if time.monotonic() - made > RECENT_SECONDS and key not in _refreshing and session.bind:
        _refreshing[key] = asyncio.create_task(_refresh(session.bind, principal, key))
    return found


async def _refresh(bind: AsyncEngine | AsyncConnection, principal: Principal, key: _Key) -> None:
    began = _dismissals
    try:
        async with AsyncSession(bind) as session:  # reads only, on the request's engine
            found = await compute(session, principal, utcnow())
        if began == _dismissals:
            _recent.put(key, (time.monotonic(), found))
    except Exception:
        log.exception("computing the dashboard's insights failed")
    finally:
        del _refreshing[key]


async def _dismissed(
    session: AsyncSession, principal: Principal, fingerprints: set[str]
) -> dict[tuple[int, str], datetime]:
    if not fingerprints:
        return {}
    stmt = readable(
        select(InsightDismissal).where(InsightDismissal.fingerprint.in_(fingerprints)),
        InsightDismissal,
        principal,
    )
    return {(d.team_id, d.fingerprint): d.dismissed_at for d in await session.scalars(stmt)}


async def dismiss(
    session: AsyncSession,
    principal: Principal,
    fingerprint_: str,
    reason: str,
    now: datetime,
) -> tuple[InsightOut, InsightDismissal]:
    """Dismiss one current insight of the caller's teams; 404 for any other fingerprint."""
    match = next(
        (i for i in await compute(session, principal, now) if i.fingerprint == fingerprint_), None
    )
    if match is None:
        raise NotFound("Insight", fingerprint_)
    if match.dismissed:
        raise Conflict("This insight is already dismissed")
    row = InsightDismissal(
        team_id=match.team_id,
        fingerprint=fingerprint_,
        kind=match.kind,
        title=match.title[:300],
        reason=reason,
        dismissed_by=principal.user_id or None,
        dismissed_at=now,
    )
    session.add(row)
    await session.flush()
    global _dismissals
    _dismissals += 1
    _recent.clear()
    match.dismissed, match.dismissed_at = True, now
    return match, row
