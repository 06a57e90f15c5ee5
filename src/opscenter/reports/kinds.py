"""Report kinds: a name, a description and a builder that reads one team's rows for a
period with aggregate SQL and returns a `ReportDocument`. Adding a kind is one line in
`KINDS`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.compliance import catalogue as compliance_catalogue
from opscenter.compliance import service as compliance
from opscenter.compliance.document import assessment_section
from opscenter.core.clock import utcnow
from opscenter.core.principal import SYSTEM, Principal
from opscenter.documents import Chart, ReportDocument, Section, Series, Table
from opscenter.finops import service as finops
from opscenter.models import (
    Backup,
    BackupStatus,
    Finding,
    FindingStatus,
    Incident,
    SecurityAsset,
    Server,
    VerificationRun,
)
from opscenter.models.security import Severity
from opscenter.reports.periods import Period

#: The most rows a detail table shows; the table's note says when there were more.
DETAIL_ROWS = 1000
#: Periods up to this many days are charted per day, longer ones per month.
DAILY_UP_TO = 62


@dataclass(frozen=True)
class Scope:
    """Whose rows a report reads: one team's."""

    team_id: int
    team_name: str


Builder = Callable[[AsyncSession, Scope, Period], Awaitable[ReportDocument]]


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    description: str
    build: Builder


# -- SQL that differs per backend -------------------------------------------------------
def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def bucket(session: AsyncSession, column: Any, period: Period) -> ColumnElement[str]:
    """The day (YYYY-MM-DD) or month (YYYY-MM) of a UTC timestamp, as text."""
    daily = period.days <= DAILY_UP_TO
    if _dialect(session) == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD" if daily else "YYYY-MM")
    return func.strftime("%Y-%m-%d" if daily else "%Y-%m", column)


def seconds_between(session: AsyncSession, start: Any, end: Any) -> ColumnElement[float]:
    if _dialect(session) == "postgresql":
        return func.extract("epoch", end - start).cast(Float)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def buckets(period: Period) -> list[str]:
    """Every day or month of the period, so a chart shows the empty ones too."""
    if period.days <= DAILY_UP_TO:
        return [(period.start + timedelta(days=i)).isoformat() for i in range(period.days)]
    months, day = [], period.start.replace(day=1)
    while day < period.end:
        months.append(day.strftime("%Y-%m"))
        day = (day + timedelta(days=32)).replace(day=1)
    return months


def capped(title: str, columns: list[str], rows: list[Any], total: int, what: str) -> Table:
    note = f"Showing the first {len(rows):,} of {total:,} {what}." if total > len(rows) else ""
    return Table(title, columns, [list(r) for r in rows], note)


async def _count(session: AsyncSession, stmt: Select[Any] | Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)


def _rate(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "n/a"


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(float(seconds) / 3600.0, 2)


def _mean_hours(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{_hours(seconds)} h"


def _day(value: Any) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else None


def _document(kind: str, scope: Scope, period: Period, sections: list[Section]) -> ReportDocument:
    return ReportDocument(
        title=KINDS[kind].title,
        period=period.label(),
        generated_at=utcnow(),
        sections=sections,
        subtitle=f"Team {scope.team_name}",
    )


# -- backup summary ---------------------------------------------------------------------
async def backup_summary(session: AsyncSession, scope: Scope, period: Period) -> ReportDocument:
    start, end = period.bounds()
    mine = (Backup.team_id == scope.team_id, Backup.created_at >= start, Backup.created_at < end)
    by_status = (
        await session.execute(
            select(Backup.status, func.count(), func.coalesce(func.sum(Backup.size_bytes), 0))
            .where(*mine)
            .group_by(Backup.status)
            .order_by(Backup.status)
        )
    ).all()
    counts = {s: int(n) for s, n, _ in by_status}
    total = sum(counts.values())
    done = counts.get(BackupStatus.COMPLETED, 0)
    failed = counts.get(BackupStatus.FAILED, 0)
    stored = sum(int(b or 0) for s, _, b in by_status if s == BackupStatus.COMPLETED)
    overview = Section(
        "Overview",
        [
            f"{total:,} backups were started in this period: {done:,} completed and "
            f"{failed:,} failed; success rate {_rate(done, done + failed)} of those that ended.",
            f"The completed backups hold {stored:,} bytes.",
        ],
        [
            Table(
                "Backups by status",
                ["Status", "Backups", "Bytes"],
                [[s, int(n), int(b or 0)] for s, n, b in by_status],
            )
        ],
    )

    day = bucket(session, Backup.created_at, period)
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for when, status, n in (
        await session.execute(
            select(day, Backup.status, func.count())
            .where(*mine, Backup.status.in_((BackupStatus.COMPLETED, BackupStatus.FAILED)))
            .group_by(day, Backup.status)
        )
    ).all():
        per[str(when)][0 if status == BackupStatus.COMPLETED else 1] += int(n)
    labels = buckets(period)
    chart = Chart(
        "Backups per day" if period.days <= DAILY_UP_TO else "Backups per month",
        "bar",
        labels,
        [
            Series("completed", [per[b][0] for b in labels]),
            Series("failed", [per[b][1] for b in labels]),
        ],
    )

    is_done = case((Backup.status == BackupStatus.COMPLETED, 1), else_=0)
    is_failed = case((Backup.status == BackupStatus.FAILED, 1), else_=0)
    grouped = (
        select(
            func.coalesce(Server.name, "(server removed)"),
            Backup.database_name,
            func.count(),
            func.sum(is_done),
            func.sum(is_failed),
            func.coalesce(
                func.sum(
                    case((Backup.status == BackupStatus.COMPLETED, Backup.size_bytes), else_=0)
                ),
                0,
            ),
            func.avg(case((Backup.status == BackupStatus.COMPLETED, Backup.duration_seconds))),
            func.max(case((Backup.status == BackupStatus.COMPLETED, Backup.completed_at))),
        )
        .outerjoin(Server, Server.id == Backup.server_id)
        .where(*mine)
        .group_by(Server.name, Backup.database_name)
    )
    databases = await _count(session, grouped)
    rows = (
        await session.execute(
            grouped.order_by(func.count().desc(), Server.name, Backup.database_name).limit(
                DETAIL_ROWS
            )
        )
    ).all()
    targets = capped(
        "Backups by database",
        [
            "Server",
            "Database",
            "Backups",
            "Completed",
            "Failed",
            "Bytes stored",
            "Avg seconds",
            "Last completed",
        ],
        [
            [
                srv,
                db,
                int(n),
                int(ok or 0),
                int(bad or 0),
                int(size),
                None if avg is None else round(float(avg), 1),
                _day(last),
            ]
            for srv, db, n, ok, bad, size, avg, last in rows
        ],
        databases,
        "databases",
    )

    failures_stmt = (
        select(
            Backup.id,
            func.coalesce(Server.name, "(server removed)"),
            Backup.database_name,
            Backup.error_code,
            Backup.error_message,
            Backup.created_at,
        )
        .outerjoin(Server, Server.id == Backup.server_id)
        .where(*mine, Backup.status == BackupStatus.FAILED)
    )
    fail_rows = (
        await session.execute(failures_stmt.order_by(Backup.id.desc()).limit(DETAIL_ROWS))
    ).all()
    failures = capped(
        "Failed backups",
        ["Backup", "Server", "Database", "Error code", "Message", "Started"],
        [
            [i, srv, db, code or "", (msg or "")[:200], _day(at)]
            for i, srv, db, code, msg, at in fail_rows
        ],
        failed,
        "failed backups",
    )
    return _document(
        "backup_summary",
        scope,
        period,
        [
            overview,
            Section("Activity", charts=[chart]),
            Section("Databases", tables=[targets]),
            Section("Failures", tables=[failures]),
        ],
    )


# -- restore tests ----------------------------------------------------------------------
async def restore_tests(session: AsyncSession, scope: Scope, period: Period) -> ReportDocument:
    start, end = period.bounds()
    mine = (
        VerificationRun.team_id == scope.team_id,
        VerificationRun.created_at >= start,
        VerificationRun.created_at < end,
    )
    by_type = (
        await session.execute(
            select(
                VerificationRun.test_type,
                VerificationRun.status,
                func.count(),
                func.avg(VerificationRun.duration_seconds),
                func.avg(VerificationRun.rto_seconds),
            )
            .where(*mine)
            .group_by(VerificationRun.test_type, VerificationRun.status)
            .order_by(VerificationRun.test_type, VerificationRun.status)
        )
    ).all()
    total = sum(int(n) for _, _, n, _, _ in by_type)
    passed = sum(int(n) for _, s, n, _, _ in by_type if s == "passed")
    ended = sum(int(n) for _, s, n, _, _ in by_type if s not in ("queued", "running"))
    restores = sum(int(n) for t, _, n, _, _ in by_type if t == "restore")
    overview = Section(
        "Overview",
        [
            f"{total:,} verification runs in this period, {restores:,} of them restore tests; "
            f"{passed:,} passed, pass rate {_rate(passed, ended)} of those that ended."
        ],
        [
            Table(
                "Runs by test type and outcome",
                ["Test type", "Outcome", "Runs", "Avg seconds", "Avg RTO seconds"],
                [
                    [
                        t,
                        s,
                        int(n),
                        None if d is None else round(float(d), 1),
                        None if r is None else round(float(r), 1),
                    ]
                    for t, s, n, d, r in by_type
                ],
            )
        ],
    )
    day = bucket(session, VerificationRun.created_at, period)
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for when, status, n in (
        await session.execute(
            select(day, VerificationRun.status, func.count())
            .where(*mine, VerificationRun.status.not_in(("queued", "running")))
            .group_by(day, VerificationRun.status)
        )
    ).all():
        per[str(when)][0 if status == "passed" else 1] += int(n)
    labels = buckets(period)
    chart = Chart(
        "Verification runs",
        "bar",
        labels,
        [
            Series("passed", [per[b][0] for b in labels]),
            Series("not passed", [per[b][1] for b in labels]),
        ],
    )
    is_passed = case((VerificationRun.status == "passed", 1), else_=0)
    grouped = (
        select(
            Backup.database_name,
            func.count(),
            func.sum(is_passed),
            func.avg(VerificationRun.rto_seconds),
            func.max(VerificationRun.created_at),
        )
        .join(Backup, Backup.id == VerificationRun.backup_id)
        .where(*mine)
        .group_by(Backup.database_name)
    )
    databases = await _count(session, grouped)
    rows = (
        await session.execute(
            grouped.order_by(func.count().desc(), Backup.database_name).limit(DETAIL_ROWS)
        )
    ).all()
    table = capped(
        "Runs by database",
        ["Database", "Runs", "Passed", "Avg RTO seconds", "Last run"],
        [
            [db, int(n), int(ok or 0), None if r is None else round(float(r), 1), _day(last)]
            for db, n, ok, r, last in rows
        ],
        databases,
        "databases",
    )
    not_passed = select(
        VerificationRun.id,
        VerificationRun.backup_id,
        VerificationRun.test_type,
        VerificationRun.status,
        VerificationRun.error_code,
        VerificationRun.created_at,
    ).where(*mine, VerificationRun.status.not_in(("passed", "queued", "running")))
    failed_total = await _count(session, not_passed)
    failed_rows = (
        await session.execute(not_passed.order_by(VerificationRun.id.desc()).limit(DETAIL_ROWS))
    ).all()
    failures = capped(
        "Runs that did not pass",
        ["Run", "Backup", "Test type", "Outcome", "Error code", "Started"],
        [[i, b, t, s, code or "", _day(at)] for i, b, t, s, code, at in failed_rows],
        failed_total,
        "runs",
    )
    return _document(
        "restore_tests",
        scope,
        period,
        [
            overview,
            Section("Activity", charts=[chart]),
            Section("Databases", tables=[table]),
            Section("Failures", tables=[failures]),
        ],
    )


# -- incidents --------------------------------------------------------------------------
async def incident_summary(session: AsyncSession, scope: Scope, period: Period) -> ReportDocument:
    start, end = period.bounds()
    mine = (
        Incident.team_id == scope.team_id,
        Incident.created_at >= start,
        Incident.created_at < end,
    )
    to_ack = seconds_between(session, Incident.created_at, Incident.acknowledged_at)
    to_resolve = seconds_between(session, Incident.created_at, Incident.resolved_at)
    by_severity = (
        await session.execute(
            select(
                Incident.severity,
                func.count(),
                func.sum(case((Incident.resolved_at.is_not(None), 1), else_=0)),
                func.avg(to_ack),
                func.avg(to_resolve),
            )
            .where(*mine)
            .group_by(Incident.severity)
            .order_by(Incident.severity)
        )
    ).all()
    total = sum(int(n) for _, n, _, _, _ in by_severity)
    resolved = sum(int(r or 0) for _, _, r, _, _ in by_severity)
    overall = (
        await session.execute(select(func.avg(to_ack), func.avg(to_resolve)).where(*mine))
    ).one()
    overview = Section(
        "Overview",
        [
            f"{total:,} incidents were opened in this period; {resolved:,} of them are resolved. "
            f"Mean time to acknowledge {_mean_hours(overall[0])}, "
            f"mean time to resolve {_mean_hours(overall[1])}."
        ],
        [
            Table(
                "Incidents by severity",
                ["Severity", "Opened", "Resolved", "MTTA hours", "MTTR hours"],
                [[s, int(n), int(r or 0), _hours(a), _hours(m)] for s, n, r, a, m in by_severity],
            )
        ],
    )
    by_status = (
        await session.execute(
            select(Incident.status, func.count())
            .where(*mine)
            .group_by(Incident.status)
            .order_by(Incident.status)
        )
    ).all()
    day = bucket(session, Incident.created_at, period)
    per: dict[str, int] = {
        str(k): int(n)
        for k, n in (
            await session.execute(select(day, func.count()).where(*mine).group_by(day))
        ).all()
    }
    labels = buckets(period)
    chart = Chart(
        "Incidents opened", "bar", labels, [Series("opened", [per.get(b, 0) for b in labels])]
    )
    listing = select(
        Incident.id,
        Incident.title,
        Incident.severity,
        Incident.status,
        Incident.environment,
        Incident.created_at,
        to_resolve,
    ).where(*mine)
    rows = (await session.execute(listing.order_by(Incident.id.desc()).limit(DETAIL_ROWS))).all()
    table = capped(
        "Incidents",
        ["Incident", "Title", "Severity", "Status", "Environment", "Opened", "Hours to resolve"],
        [[i, t, sev, st, env, _day(at), _hours(r)] for i, t, sev, st, env, at, r in rows],
        total,
        "incidents",
    )
    return _document(
        "incident_summary",
        scope,
        period,
        [
            overview,
            Section(
                "Status now",
                tables=[
                    Table(
                        "Incidents of the period by status",
                        ["Status", "Incidents"],
                        [[s, int(n)] for s, n in by_status],
                    )
                ],
            ),
            Section("Activity", charts=[chart]),
            Section("Incidents", tables=[table]),
        ],
    )


# -- security findings ------------------------------------------------------------------
SEVERITIES = [s.value for s in Severity]


async def security_findings(session: AsyncSession, scope: Scope, period: Period) -> ReportDocument:
    start, end = period.bounds()
    now = utcnow()
    team = Finding.team_id == scope.team_id
    found = dict(
        (
            await session.execute(
                select(Finding.severity, func.count())
                .where(team, Finding.first_seen >= start, Finding.first_seen < end)
                .group_by(Finding.severity)
            )
        ).all()
    )
    fixed = dict(
        (
            await session.execute(
                select(Finding.severity, func.count())
                .where(team, Finding.fixed_at >= start, Finding.fixed_at < end)
                .group_by(Finding.severity)
            )
        ).all()
    )
    open_now = dict(
        (
            await session.execute(
                select(Finding.severity, func.count())
                .where(team, Finding.status == FindingStatus.OPEN)
                .group_by(Finding.severity)
            )
        ).all()
    )
    overdue = dict(
        (
            await session.execute(
                select(Finding.severity, func.count())
                .where(team, Finding.status == FindingStatus.OPEN, Finding.due_at < now)
                .group_by(Finding.severity)
            )
        ).all()
    )
    table = Table(
        "Findings by severity",
        ["Severity", "New in period", "Fixed in period", "Open now", "Overdue now"],
        [
            [
                s,
                int(found.get(s, 0)),
                int(fixed.get(s, 0)),
                int(open_now.get(s, 0)),
                int(overdue.get(s, 0)),
            ]
            for s in SEVERITIES
        ],
    )
    new_total, fixed_total = sum(map(int, found.values())), sum(map(int, fixed.values()))
    open_total = sum(map(int, open_now.values()))
    overdue_total = sum(map(int, overdue.values()))
    overview = Section(
        "Overview",
        [
            f"{new_total:,} findings were first seen in this period and {fixed_total:,} "
            f"were fixed. {open_total:,} are open now, {overdue_total:,} of them past their "
            "due date."
        ],
        [table],
        [
            Chart(
                "Findings in the period",
                "bar",
                SEVERITIES,
                [
                    Series("new", [float(found.get(s, 0)) for s in SEVERITIES]),
                    Series("fixed", [float(fixed.get(s, 0)) for s in SEVERITIES]),
                ],
            )
        ],
    )
    rank = case(
        {s: i for i, s in enumerate(SEVERITIES)}, value=Finding.severity, else_=len(SEVERITIES)
    )
    listing = (
        select(
            Finding.identifier,
            Finding.title,
            Finding.severity,
            Finding.cvss_score,
            SecurityAsset.name,
            Finding.component,
            Finding.due_at,
        )
        .join(SecurityAsset, SecurityAsset.id == Finding.asset_id)
        .where(team, Finding.status == FindingStatus.OPEN)
    )
    rows = (
        await session.execute(
            listing.order_by(rank, Finding.cvss_score.desc().nulls_last(), Finding.id).limit(
                DETAIL_ROWS
            )
        )
    ).all()
    open_table = capped(
        "Open findings, most severe first",
        ["Identifier", "Title", "Severity", "CVSS", "Asset", "Component", "Due"],
        [[i, t[:200], s, c, a, comp, _day(due)] for i, t, s, c, a, comp, due in rows],
        open_total,
        "open findings",
    )
    return _document(
        "security_findings",
        scope,
        period,
        [overview, Section("Open findings", tables=[open_table])],
    )


# -- costs ------------------------------------------------------------------------------
async def costs(session: AsyncSession, scope: Scope, period: Period) -> ReportDocument:
    span = finops.Span(period.start, period.end)
    by_service = await finops.rollup_sums(session, SYSTEM, span, "service", team_id=scope.team_id)
    by_day = await finops.rollup_sums(
        session, SYSTEM, span, "category", by="day", team_id=scope.team_id
    )
    priced, unpriced = await finops.priced_backups(session, SYSTEM, scope.team_id)
    storage = finops.backup_sums(priced, span, lambda b: b.storage_name)
    totals: dict[str, int] = defaultdict(int)
    for (_, cur), (_, effective) in by_service.items():
        totals[cur] += effective
    for (_, cur), cost in storage.items():
        totals[cur] += cost
    services = sorted(by_service.items(), key=lambda kv: (kv[0][1], -kv[1][1], kv[0][0]))
    service_table = Table(
        "Cloud costs by service",
        ["Service", "Currency", "Billed", "Effective"],
        [[k or "(none)", cur, finops.amount(b), finops.amount(e)] for (k, cur), (b, e) in services],
    )
    storage_table = Table(
        "Backup storage cost",
        ["Storage", "Currency", "Cost"],
        [[k, cur, finops.amount(c)] for (k, cur), c in sorted(storage.items()) if c],
        note=(
            f"{len(unpriced)} storage provider(s) hold backups but have no price set."
            if unpriced
            else ""
        ),
    )
    labels = buckets(period)
    daily = period.days <= DAILY_UP_TO
    charts = []
    for cur in sorted({cur for (_, cur) in by_day}):
        per: dict[str, float] = defaultdict(float)
        for (day, c), (_, effective) in by_day.items():
            if c == cur:
                per[day if daily else day[:7]] += finops.amount(effective)
        charts.append(
            Chart(
                f"Cloud costs per {'day' if daily else 'month'}",
                "line" if daily else "bar",
                labels,
                [Series(cur, [round(per[b], 2) for b in labels])],
                unit=cur,
            )
        )
    overview = Section(
        "Overview",
        [
            "Total: "
            + (
                ", ".join(f"{finops.amount(v):,.2f} {cur}" for cur, v in sorted(totals.items()))
                or "no costs"
            )
            + " (cloud costs as imported, effective, plus backup storage at the prices set)."
        ],
        [service_table, storage_table],
        charts,
    )
    return _document("costs", scope, period, [overview])


# -- compliance -------------------------------------------------------------------------
async def compliance_status(session: AsyncSession, scope: Scope, period: Period) -> ReportDocument:
    """Every framework's requirements over the period, as the compliance domain assesses
    them from the team's own evidence (and the installation's: the audit chain)."""
    reader = Principal(
        user_id=0,
        username=f"report for team {scope.team_name}",
        role="viewer",
        permissions=frozenset(),
        team_ids=frozenset({scope.team_id}),
    )
    start, end = _moment(period.start), min(_moment(period.end), utcnow())
    ids = list(compliance_catalogue.frameworks())
    found = await compliance.assess_frameworks(session, reader, ids, start, end)
    sections = [assessment_section(f) for f in found]
    return _document("compliance", scope, period, sections)


def _moment(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "backup_summary",
            "Backup summary",
            "Backups by status, day and database, and the failures",
            backup_summary,
        ),
        Kind(
            "restore_tests",
            "Restore tests",
            "Verification runs and restore tests, their outcomes and RTO",
            restore_tests,
        ),
        Kind(
            "incident_summary",
            "Incident summary",
            "Incidents by severity with MTTA and MTTR",
            incident_summary,
        ),
        Kind(
            "security_findings",
            "Security findings",
            "New, fixed, open and overdue findings by severity",
            security_findings,
        ),
        Kind("costs", "Costs", "Cloud costs by service and the backup storage cost", costs),
        Kind(
            "compliance",
            "Compliance status",
            "SOC 2, ISO 27001:2022 and NIST CSF 2.0: each requirement's status and controls",
            compliance_status,
        ),
    )
}
