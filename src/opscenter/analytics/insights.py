"""Insights: anomalies found, on request, by median and MAD per target.

For each target (server, database) the last SERIES finished backups of the last
LOOKBACK_DAYS are read in one windowed query; a completed backup whose size is more than
Z_LIMIT robust standard deviations (1.4826 MAD) from the target's median is a size
anomaly, one whose duration is that far above it a duration jump (Iglewicz and Hoaglin's
3.5). A failing streak is STREAK or more failures in a row up to the newest; a
verification gap is an active target none of whose backups of the last GAP_DAYS were
verified. Incidents per team per calendar week: this week far above the median of the
previous weeks is a rise.

Each insight has a fingerprint: sha256 of its kind, its subject and the anomalous data
point (a backup id, the first failure of the streak, the last verified backup, the week),
so a dismissal (`analytics_dismissals`) outlives the recomputation."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.analytics import figures as fig
from opscenter.analytics.figures import MONDAY_ORIGIN, WEEK, Period
from opscenter.analytics.schemas import InsightOut
from opscenter.analytics.service import scoped, server_names
from opscenter.core import stats
from opscenter.core.cache import TtlCache
from opscenter.core.errors import Conflict, NotFound
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
#: The dashboard shows insights at most this old: computing them reads every target's
#: recent backups, too much for each refresh of the dashboard. `/insights` always computes.
RECENT_SECONDS = 60.0
API = "/api/v1"


def fingerprint(kind: str, subject: str, point: object) -> str:
    return hashlib.sha256(f"{kind}|{subject}|{point}".encode()).hexdigest()


@dataclass
class _Target:
    team_id: int
    server_id: int | None
    database_name: str
    rows: list[Any]  # newest first

    @property
    def subject(self) -> str:
        return f"{self.server_id}/{self.database_name}"


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


def _outliers(target: _Target, name: str) -> list[InsightOut]:
    done = [
        r
        for r in target.rows
        if r.status == BackupStatus.COMPLETED and getattr(r, name) is not None
    ]
    if len(done) < MIN_SERIES:
        return []
    values = [float(getattr(r, name)) for r in done]
    center = stats.median(values)
    spread = stats.mad(values, center)
    sizes = name == "size_bytes"
    floor = (
        SIZE_FLOOR * abs(center)
        if sizes
        else max(DURATION_FLOOR * abs(center), DURATION_FLOOR_SECONDS)
    )
    found = []
    for r, value in zip(done, values, strict=True):
        z = stats.robust_z(value, center, spread, max(floor, 1e-9))
        if abs(z) <= Z_LIMIT or (not sizes and z < 0):
            continue
        where = f"{target.database_name} (server {target.server_id})"
        if sizes:
            smaller = value < center
            kind, severity = "size_anomaly", "warning" if smaller else "info"
            title = (
                f"Backup {r.id} of {where} is far {'smaller' if smaller else 'larger'} than usual"
            )
            detail = (
                f"{_size(value)} against a median of {_size(center)} over the last {len(done)} "
                f"completed backups (robust z {z:.1f})"
            )
        else:
            kind, severity = "duration_jump", "warning"
            title = f"Backup {r.id} of {where} took far longer than usual"
            detail = (
                f"{value:.0f} s against a median of {center:.0f} s over the last {len(done)} "
                f"completed backups (robust z {z:.1f})"
            )
        found.append(
            _insight(
                kind,
                severity,
                title,
                detail,
                target,
                r.id,
                team_id=target.team_id,
                at=r.completed_at or r.created_at,
                links=[f"{API}/backups/{r.id}", _target_link(target)],
                value=value,
                center=center,
                spread=spread,
                score=z,
            )
        )
    return found


def _target_link(target: _Target) -> str:
    server = f"server_id={target.server_id}&" if target.server_id else ""
    return f"{API}/backups?{server}database_name={target.database_name}"


def _streak(target: _Target) -> list[InsightOut]:
    streak = []
    for r in target.rows:
        if r.status == BackupStatus.COMPLETED:
            break
        streak.append(r)
    if len(streak) < STREAK:
        return []
    first = streak[-1]
    return [
        _insight(
            "failing_streak",
            "critical" if len(streak) >= 2 * STREAK else "warning",
            f"{len(streak)} failed backups in a row of {target.database_name} "
            f"(server {target.server_id})",
            f"every backup since backup {first.id} failed; the newest is backup {streak[0].id}",
            target,
            first.id,
            team_id=target.team_id,
            at=first.created_at,
            links=[f"{API}/backups/{streak[0].id}", f"{_target_link(target)}&status=failed"],
            value=float(len(streak)),
        )
    ]


async def _gaps(session: AsyncSession, principal: Principal, now: datetime) -> list[InsightOut]:
    """Active, old enough targets with no verified backup in the last GAP_DAYS."""
    done = Backup.status == BackupStatus.COMPLETED
    verified = and_(done, Backup.verification_status.in_(fig.VERIFIED))
    stmt = (
        select(
            Backup.server_id,
            Backup.database_name,
            func.max(Backup.team_id),
            func.min(case((done, Backup.created_at))),
            func.max(case((done, Backup.created_at))),
            func.max(case((verified, Backup.id))),
            func.max(case((verified, Backup.created_at))),
        )
        .where(fig.backup_filter(Period(now - timedelta(days=LOOKBACK_DAYS), now)))
        .group_by(Backup.server_id, Backup.database_name)
    )
    since = now - timedelta(days=GAP_DAYS)
    found = []
    for sid, db, team, first, last, vid, vat in (
        await session.execute(scoped(stmt, Backup, principal))
    ).all():
        if first is None or last is None or first > since or last < since:
            continue  # new, or no longer backed up: nothing to verify regularly
        if vat is not None and vat >= since:
            continue
        target = _Target(int(team), sid, db, [])
        never = vid is None
        found.append(
            _insight(
                "verification_gap",
                "warning",
                f"No backup of {db} (server {sid}) verified in {GAP_DAYS} days",
                "none of its backups of the last 90 days was verified"
                if never
                else f"the last verified backup is backup {vid}, made {vat:%Y-%m-%d}",
                target,
                vid or 0,
                team_id=int(team),
                at=vat,
                links=[_target_link(target), f"{API}/verify"],
            )
        )
    return found


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


async def _targets(session: AsyncSession, principal: Principal, now: datetime) -> list[_Target]:
    rank = (
        func.row_number()
        .over(partition_by=(Backup.server_id, Backup.database_name), order_by=Backup.id.desc())
        .label("rank")
    )
    inner = scoped(
        select(
            Backup.id,
            Backup.team_id,
            Backup.server_id,
            Backup.database_name,
            Backup.status,
            Backup.size_bytes,
            Backup.duration_seconds,
            Backup.created_at,
            Backup.completed_at,
            rank,
        ).where(fig.backup_filter(Period(now - timedelta(days=LOOKBACK_DAYS), now))),
        Backup,
        principal,
    ).subquery()
    rows = (
        await session.execute(select(inner).where(inner.c.rank <= SERIES).order_by(inner.c.rank))
    ).all()
    targets: dict[tuple[int | None, str], _Target] = {}
    for r in rows:
        key = (r.server_id, r.database_name)
        if key not in targets:
            targets[key] = _Target(r.team_id, r.server_id, r.database_name, [])
        targets[key].rows.append(r)
    return list(targets.values())


async def compute(session: AsyncSession, principal: Principal, now: datetime) -> list[InsightOut]:
    """Every insight the caller's teams have, dismissed ones marked, most severe first."""
    found: list[InsightOut] = []
    for target in await _targets(session, principal, now):
        found += _outliers(target, "size_bytes")
        found += _outliers(target, "duration_seconds")
        found += _streak(target)
    found += await _gaps(session, principal, now)
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


_recent: TtlCache[tuple[str, bool, frozenset[int]], list[InsightOut]] = TtlCache(
    RECENT_SECONDS, 1000
)


async def recent(session: AsyncSession, principal: Principal, now: datetime) -> list[InsightOut]:
    """`compute`, or its answer for the same teams (of the same database) of the last
    RECENT_SECONDS; a dismissal in this process forgets them."""
    key = (
        str(session.get_bind().engine.url),
        principal.sees_all_teams,
        frozenset() if principal.sees_all_teams else principal.team_ids,
    )
    found = _recent.get(key)
    if found is None:
        found = await compute(session, principal, now)
        _recent.put(key, found)
    return found


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
    _recent.clear()
    match.dismissed, match.dismissed_at = True, now
    return match, row
