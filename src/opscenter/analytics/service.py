"""Metrics, trends and predictions over a window, every figure one aggregate query over
the stored backups, verification runs, incidents, findings and cost roll-ups, restricted
to the caller's teams."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.analytics import figures as fig
from opscenter.analytics.figures import DAY, WEEK, Period
from opscenter.analytics.schemas import (
    BackupFigures,
    DayCount,
    IncidentFigures,
    MetricsOut,
    PredictionOut,
    PredictionPoint,
    RestoreTestFigures,
    RpoFigures,
    SeverityCount,
    SpendFigure,
    TargetFigures,
    TrendMetric,
    TrendOut,
    TrendPoint,
    VerificationFigures,
)
from opscenter.core import cron, stats
from opscenter.core.principal import Principal
from opscenter.core.scoping import readable
from opscenter.finops import service as finops
from opscenter.models import Backup, BackupStatus, Finding, Incident, Schedule, Server
from opscenter.models.security import FindingStatus, Severity
from opscenter.models.verification import VerificationRun

#: A target is within its RPO while its last good backup is at most this many schedule
#: intervals old (the dashboard's amber threshold).
RPO_INTERVALS = 1.5
LATE_LISTED = 50
UNITS = {
    TrendMetric.BACKUPS: "count",
    TrendMetric.BACKUP_FAILURES: "count",
    TrendMetric.BACKUP_SUCCESS_RATE: "percent",
    TrendMetric.BACKUP_DURATION: "seconds",
    TrendMetric.BACKUP_SIZE: "bytes",
    TrendMetric.VERIFICATION_COVERAGE: "percent",
    TrendMetric.RESTORE_RTO: "seconds",
    TrendMetric.INCIDENTS: "count",
    TrendMetric.MTTA: "seconds",
    TrendMetric.MTTR: "seconds",
    TrendMetric.FINDINGS: "count",
}
COUNTS = {m for m, unit in UNITS.items() if unit == "count"}
PREDICTED = (
    TrendMetric.BACKUPS,
    TrendMetric.BACKUP_SUCCESS_RATE,
    TrendMetric.BACKUP_SIZE,
    TrendMetric.BACKUP_DURATION,
    TrendMetric.INCIDENTS,
    TrendMetric.MTTR,
)
HISTORY_WEEKS = 12
MIN_WEEKS = 4
METHOD = (
    "Theil-Sen line (the median of the slopes between pairs of weeks) through the weekly "
    "values of the last 12 weeks, extended to the weeks ahead"
)
INTERVAL = (
    "95 % prediction interval: the line plus or minus 1.96 times 1.4826 times the median "
    "absolute deviation of the weeks' residuals from it"
)


def scoped(stmt: Any, model: Any, principal: Principal) -> Select[Any]:
    """`readable` for a statement of columns (its row type is not the model's)."""
    return readable(stmt, model, principal)


# -- metrics --------------------------------------------------------------------------------
async def backup_totals(
    session: AsyncSession, principal: Principal, period: Period
) -> tuple[BackupFigures, VerificationFigures]:
    stmt = select(*fig.backup_columns()).where(fig.backup_filter(period))
    row = (await session.execute(scoped(stmt, Backup, principal))).one()
    completed, verified = int(row.completed or 0), int(row.verified or 0)
    return fig.backup_figures(row), VerificationFigures(
        completed_backups=completed,
        verified_backups=verified,
        coverage_percent=fig.percent(verified, completed),
    )


async def target_figures(
    session: AsyncSession, principal: Principal, period: Period
) -> list[TargetFigures]:
    stmt = (
        select(
            Backup.server_id,
            Backup.database_name,
            *fig.backup_columns(),
            func.max(Backup.completed_at).label("last_completed"),
        )
        .where(fig.backup_filter(period))
        .group_by(Backup.server_id, Backup.database_name)
    )
    rows = (await session.execute(scoped(stmt, Backup, principal))).all()
    names = await server_names(session, {r.server_id for r in rows if r.server_id})
    out = [
        TargetFigures(
            **fig.backup_figures(r).model_dump(),
            server_id=r.server_id,
            server_name=names.get(r.server_id) if r.server_id else None,
            database_name=r.database_name,
            last_completed_at=r.last_completed,
        )
        for r in rows
    ]
    return sorted(out, key=lambda t: (t.server_name or "", t.database_name))


async def server_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    """Names of servers the rows refer to (the rows were already team-scoped)."""
    if not ids:
        return {}
    rows = await session.execute(select(Server.id, Server.name).where(Server.id.in_(ids)))
    return {i: n for i, n in rows.all()}


def interval(cron_expression: str, timezone: str, at: datetime) -> timedelta | None:
    tz = cron.zone(timezone)
    first = cron.next_after(cron_expression, tz, at)
    second = first and cron.next_after(cron_expression, tz, first)
    return second - first if first and second else None


async def rpo(session: AsyncSession, principal: Principal, at: datetime) -> RpoFigures:
    """Targets of enabled schedules whose last good backup, at `at`, is at most 1.5 of the
    schedule's intervals old. A target with several schedules is judged by the tightest."""
    # Columns, not Schedule objects: an installation has hundreds of schedules.
    schedules = await session.execute(
        scoped(
            select(
                Schedule.server_id,
                Schedule.database_name,
                Schedule.source_path,
                Schedule.cron_expression,
                Schedule.timezone,
            ).where(Schedule.enabled),
            Schedule,
            principal,
        )
    )
    allowed: dict[tuple[int, str], timedelta] = {}
    # Schedules mostly share a few expressions: each (cron, timezone) is evaluated once.
    steps: dict[tuple[str, str], timedelta | None] = {}
    for server_id, database_name, source_path, expression, timezone in schedules:
        known = (expression, timezone)
        if known not in steps:
            steps[known] = interval(expression, timezone, at)
        step = steps[known]
        if step is None:
            continue
        key = (server_id, database_name or source_path or "")
        allowed[key] = min(allowed.get(key, step * RPO_INTERVALS), step * RPO_INTERVALS)
    if not allowed:
        return RpoFigures(scheduled_targets=0, compliant=0, compliance_percent=None, late=[])
    stmt = (
        select(Backup.server_id, Backup.database_name, func.max(Backup.completed_at))
        .where(
            Backup.status == BackupStatus.COMPLETED,
            Backup.server_id.in_({k[0] for k in allowed}),
            Backup.copy_of_id.is_(None),
            Backup.completed_at <= at,
            # Only a backup within the widest limit can make a target compliant; one made
            # more than a day before that (read off the index) completed before it too.
            Backup.completed_at >= at - max(allowed.values()),
            Backup.created_at >= at - max(allowed.values()) - timedelta(days=1),
        )
        .group_by(Backup.server_id, Backup.database_name)
    )
    last = {
        (sid, db): when
        for sid, db, when in (await session.execute(scoped(stmt, Backup, principal))).all()
    }
    late = sorted(
        f"{sid}/{db}"
        for (sid, db), limit in allowed.items()
        if (when := last.get((sid, db))) is None or at - when > limit
    )
    compliant = len(allowed) - len(late)
    return RpoFigures(
        scheduled_targets=len(allowed),
        compliant=compliant,
        compliance_percent=fig.percent(compliant, len(allowed)),
        late=late[:LATE_LISTED],
    )


async def restore_tests(
    session: AsyncSession, principal: Principal, period: Period
) -> RestoreTestFigures:
    passed = VerificationRun.status == "passed"
    stmt = select(
        func.count(),
        func.count(VerificationRun.id).filter(passed),
        func.avg(VerificationRun.rto_seconds).filter(passed),
        func.max(VerificationRun.rto_seconds).filter(passed),
    ).where(
        VerificationRun.test_type == "restore",
        VerificationRun.status.in_(("passed", "failed", "corrupt")),
        VerificationRun.created_at >= period.start,
        VerificationRun.created_at < period.end,
    )
    runs, ok, mean, top = (await session.execute(scoped(stmt, VerificationRun, principal))).one()
    return RestoreTestFigures(
        runs=int(runs),
        passed=int(ok),
        mean_rto_seconds=fig.rounded(mean),
        max_rto_seconds=fig.rounded(top),
    )


async def incidents(session: AsyncSession, principal: Principal, period: Period) -> IncidentFigures:
    """MTTA and MTTR of the incidents opened in the period (times measured from opening)."""
    ack = fig.epoch(session, Incident.acknowledged_at) - fig.epoch(session, Incident.created_at)
    fix = fig.epoch(session, Incident.resolved_at) - fig.epoch(session, Incident.created_at)
    stmt = select(
        func.count(),
        func.count(Incident.acknowledged_at),
        func.count(Incident.resolved_at),
        func.avg(ack),
        func.avg(fix),
    ).where(Incident.created_at >= period.start, Incident.created_at < period.end)
    opened, acked, fixed, mtta, mttr = (
        await session.execute(scoped(stmt, Incident, principal))
    ).one()
    return IncidentFigures(
        opened=int(opened),
        acknowledged=int(acked),
        resolved=int(fixed),
        mtta_seconds=fig.rounded(mtta, 1),
        mttr_seconds=fig.rounded(mttr, 1),
    )


async def open_findings(session: AsyncSession, principal: Principal) -> list[SeverityCount]:
    stmt = (
        select(Finding.severity, func.count())
        .where(Finding.status == FindingStatus.OPEN)
        .group_by(Finding.severity)
    )
    counts: dict[str, int] = {
        s: n for s, n in (await session.execute(scoped(stmt, Finding, principal))).all()
    }
    return [SeverityCount(severity=s, count=int(counts.get(s, 0))) for s in Severity]


async def spend(session: AsyncSession, principal: Principal, period: Period) -> list[SpendFigure]:
    """Imported cost (FOCUS lines' effective cost) of the days the period touches."""
    span = finops.Span(period.start.date(), period.end.date() + timedelta(days=1))
    sums: dict[str, int] = defaultdict(int)
    for (_, currency), (_, effective) in (
        await finops.rollup_sums(session, principal, span, "category", by="team")
    ).items():
        sums[currency] += effective
    return [
        SpendFigure(currency=c, effective_cost=finops.amount(v)) for c, v in sorted(sums.items())
    ]


async def metrics(session: AsyncSession, principal: Principal, period: Period) -> MetricsOut:
    backups, verification = await backup_totals(session, principal, period)
    return MetricsOut(
        window=period.out(),
        backups=backups,
        targets=await target_figures(session, principal, period),
        rpo=await rpo(session, principal, period.end),
        verification=verification,
        restore_tests=await restore_tests(session, principal, period),
        incidents=await incidents(session, principal, period),
        open_findings=await open_findings(session, principal),
        spend=await spend(session, principal, period),
    )


async def daily(session: AsyncSession, principal: Principal, period: Period) -> list[DayCount]:
    """Completed and failed backups per UTC day of the period."""
    day = fig.bucket(session, Backup.created_at, 0.0, DAY).label("day")
    stmt = (
        select(
            day, func.count(), func.sum(case((Backup.status == BackupStatus.COMPLETED, 1), else_=0))
        )
        .where(fig.backup_filter(period))
        .group_by(day)
    )
    rows = {
        int(d): (int(n), int(c or 0))
        for d, n, c in (await session.execute(scoped(stmt, Backup, principal))).all()
    }
    first = int(period.start.timestamp() // DAY)
    last = int((period.end.timestamp() - 1) // DAY)
    out = []
    for d in range(first, last + 1):
        n, c = rows.get(d, (0, 0))
        label = datetime.fromtimestamp(d * DAY, UTC).date().isoformat()
        out.append(DayCount(day=label, completed=c, failed=n - c))
    return out


# -- trends ---------------------------------------------------------------------------------
async def _series(
    session: AsyncSession,
    principal: Principal,
    metric: TrendMetric,
    period: Period,
    step: int,
) -> dict[int, tuple[float | None, int]]:
    """Step index -> (value, samples) of `metric`, for the steps that have rows."""
    origin = period.start.timestamp()
    if metric in (TrendMetric.RESTORE_RTO,):
        at = fig.bucket(session, VerificationRun.created_at, origin, step).label("b")
        stmt = (
            select(at, func.avg(VerificationRun.rto_seconds), func.count())
            .where(
                VerificationRun.test_type == "restore",
                VerificationRun.status == "passed",
                VerificationRun.created_at >= period.start,
                VerificationRun.created_at < period.end,
            )
            .group_by(at)
        )
        rows = (await session.execute(scoped(stmt, VerificationRun, principal))).all()
        return {int(b): (fig.rounded(v), int(n)) for b, v, n in rows}
    if metric in (TrendMetric.INCIDENTS, TrendMetric.MTTA, TrendMetric.MTTR):
        at = fig.bucket(session, Incident.created_at, origin, step).label("b")
        end = Incident.acknowledged_at if metric == TrendMetric.MTTA else Incident.resolved_at
        since = fig.epoch(session, end) - fig.epoch(session, Incident.created_at)
        stmt = (
            select(at, func.count(), func.avg(since), func.count(end))
            .where(Incident.created_at >= period.start, Incident.created_at < period.end)
            .group_by(at)
        )
        rows = (await session.execute(scoped(stmt, Incident, principal))).all()
        if metric == TrendMetric.INCIDENTS:
            return {int(b): (float(n), int(n)) for b, n, _, _ in rows}
        return {int(b): (fig.rounded(v, 1), int(k)) for b, _, v, k in rows if k}
    if metric == TrendMetric.FINDINGS:
        at = fig.bucket(session, Finding.first_seen, origin, step).label("b")
        stmt = (
            select(at, func.count())
            .where(Finding.first_seen >= period.start, Finding.first_seen < period.end)
            .group_by(at)
        )
        rows = (await session.execute(scoped(stmt, Finding, principal))).all()
        return {int(b): (float(n), int(n)) for b, n in rows}
    at = fig.bucket(session, Backup.created_at, origin, step).label("b")
    stmt = select(at, *fig.backup_columns()).where(fig.backup_filter(period)).group_by(at)
    out: dict[int, tuple[float | None, int]] = {}
    for row in (await session.execute(scoped(stmt, Backup, principal))).all():
        f = fig.backup_figures(row)
        value: float | None = {
            TrendMetric.BACKUPS: float(f.finished),
            TrendMetric.BACKUP_FAILURES: float(f.failed),
            TrendMetric.BACKUP_SUCCESS_RATE: f.success_rate,
            TrendMetric.BACKUP_DURATION: f.mean_duration_seconds,
            TrendMetric.BACKUP_SIZE: f.mean_size_bytes,
            TrendMetric.VERIFICATION_COVERAGE: fig.percent(int(row.verified or 0), f.completed),
        }[metric]
        samples = (
            f.finished
            if metric in COUNTS or metric == TrendMetric.BACKUP_SUCCESS_RATE
            else f.completed
        )
        out[int(row.b)] = (value, samples)
    return out


async def trend(
    session: AsyncSession, principal: Principal, metric: TrendMetric, period: Period, step: int
) -> TrendOut:
    series = await _series(session, principal, metric, period, step)
    span = (period.end - period.start).total_seconds()
    points = []
    for i in range(int(-(-span // step))):
        start = period.start + timedelta(seconds=i * step)
        value, samples = series.get(i, (None, 0))
        if value is None and metric in COUNTS:
            value = 0.0  # no rows in a step is a count of 0, not a gap
        points.append(
            TrendPoint(
                start=start,
                end=min(start + timedelta(seconds=step), period.end),
                value=value,
                samples=samples,
            )
        )
    known = [(i * step / DAY, p.value) for i, p in enumerate(points) if p.value is not None]
    slope = stats.theil_sen(known)[0] if len(known) >= 2 else None
    return TrendOut(
        metric=metric,
        unit=UNITS[metric],
        window=period.out(),
        step_seconds=step,
        slope_per_day=fig.rounded(slope, 4),
        points=points,
    )


def _bounded(metric: TrendMetric, value: float) -> float:
    """Counts, sizes and durations are never negative, rates stay within 0..100."""
    value = max(0.0, value)
    return min(100.0, value) if UNITS[metric] == "percent" else value


async def prediction(
    session: AsyncSession, principal: Principal, metric: TrendMetric, weeks: int, now: datetime
) -> PredictionOut:
    period = Period(now - timedelta(days=7 * HISTORY_WEEKS), now)
    history = await trend(session, principal, metric, period, WEEK)
    known = [(float(i), p.value) for i, p in enumerate(history.points) if p.value is not None]
    with_data = sum(1 for p in history.points if p.samples)
    base = {
        "metric": metric,
        "unit": UNITS[metric],
        "method": METHOD,
        "interval": INTERVAL,
        "history_weeks": HISTORY_WEEKS,
        "weeks_with_data": with_data,
    }
    if with_data < MIN_WEEKS:
        return PredictionOut(
            **base,
            slope_per_week=None,
            reason=f"fewer than {MIN_WEEKS} of the last {HISTORY_WEEKS} weeks have data",
            points=[],
        )
    slope, intercept = stats.theil_sen(known)
    half = stats.interval_half_width(known, slope, intercept)
    points = []
    for ahead in range(weeks):
        x = float(HISTORY_WEEKS + ahead)
        value = intercept + slope * x
        points.append(
            PredictionPoint(
                start=now + timedelta(days=7 * ahead),
                value=round(_bounded(metric, value), 2),
                low=round(_bounded(metric, value - half), 2),
                high=round(_bounded(metric, value + half), 2),
            )
        )
    return PredictionOut(**base, slope_per_week=round(slope, 4), reason=None, points=points)
