"""Custom analytics reports: a saved selection of metrics, filters and grouping over the
backups of the report's team, generated on demand (in the request: one aggregate query)
or on its cron schedule (the analytics loop, `plugin.py`). Each generation is kept as a
new numbered version, downloadable as JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from opscenter.analytics import figures as fig
from opscenter.analytics.figures import DAY, MONDAY_ORIGIN, WEEK
from opscenter.analytics.schemas import (
    GroupBy,
    ReportIn,
    ReportMetric,
    ReportOut,
    ResultOut,
    ResultSummary,
)
from opscenter.core import cron
from opscenter.core.errors import Conflict, NotFound
from opscenter.core.principal import Principal
from opscenter.core.scoping import get_readable, readable
from opscenter.finops.service import team_for
from opscenter.models import AnalyticsReport, AnalyticsReportResult, Backup

#: Scheduled reports generated per pass of the loop, so one pass stays short.
DUE_BATCH = 20
#: Rows kept per generated version (a report grouped by target or day stays far below).
MAX_ROWS = 10_000


def report_out(r: AnalyticsReport) -> ReportOut:
    return ReportOut.model_validate(r, from_attributes=True)


def summary_out(r: AnalyticsReportResult) -> ResultSummary:
    return ResultSummary(
        report_id=r.report_id,
        version=r.version,
        trigger=r.trigger,
        window_start=r.window_start,
        window_end=r.window_end,
        row_count=r.row_count,
        generated_at=r.generated_at,
    )


def result_out(r: AnalyticsReportResult) -> ResultOut:
    return ResultOut(**summary_out(r).model_dump(), columns=r.columns, rows=r.rows)


def reports_query(principal: Principal) -> Select[Any]:
    return readable(select(AnalyticsReport), AnalyticsReport, principal).order_by(
        AnalyticsReport.id.desc()
    )


async def get_report(
    session: AsyncSession, principal: Principal, report_id: int
) -> AnalyticsReport:
    return await get_readable(session, AnalyticsReport, report_id, principal, name="Report")


def next_slot(report: AnalyticsReport, after: datetime) -> datetime | None:
    if report.schedule is None:
        return None
    return cron.next_after(report.schedule, cron.zone(report.timezone), after)


async def create_report(
    session: AsyncSession, principal: Principal, data: ReportIn, now: datetime
) -> AnalyticsReport:
    team = team_for(principal, data.team_id)
    taken = await session.scalar(
        select(AnalyticsReport.id).where(
            AnalyticsReport.team_id == team, AnalyticsReport.name == data.name
        )
    )
    if taken is not None:
        raise Conflict(f"The team already has a report named '{data.name}'")
    report = AnalyticsReport(
        team_id=team,
        name=data.name,
        description=data.description,
        metrics=[str(m) for m in data.metrics],
        filters=data.filters.model_dump(exclude_none=True),
        group_by=str(data.group_by),
        window=data.window,
        schedule=data.schedule,
        timezone=data.timezone,
        created_by=principal.user_id or None,
    )
    report.next_run_at = next_slot(report, now)
    session.add(report)
    await session.flush()
    return report


def _group(session: AsyncSession, group_by: str) -> list[Any]:
    if group_by == GroupBy.TARGET:
        return [Backup.server_id.label("server_id"), Backup.database_name.label("database_name")]
    if group_by == GroupBy.TEAM:
        return [Backup.team_id.label("team_id")]
    if group_by == GroupBy.DAY:
        return [fig.bucket(session, Backup.created_at, 0.0, DAY).label("day")]
    if group_by == GroupBy.WEEK:
        return [fig.bucket(session, Backup.created_at, float(MONDAY_ORIGIN), WEEK).label("week")]
    return []


def _key(name: str, value: Any) -> Any:
    """A group's value as the report shows it: days and weeks as their first date."""
    if name == "day":
        return datetime.fromtimestamp(int(value) * DAY, UTC).date().isoformat()
    if name == "week":
        return datetime.fromtimestamp(MONDAY_ORIGIN + int(value) * WEEK, UTC).date().isoformat()
    return value


def _value(metric: str, row: Any) -> Any:
    f = fig.backup_figures(row)
    return {
        ReportMetric.BACKUPS: f.finished,
        ReportMetric.COMPLETED: f.completed,
        ReportMetric.FAILED: f.failed,
        ReportMetric.SUCCESS_RATE: f.success_rate,
        ReportMetric.MEAN_DURATION_SECONDS: f.mean_duration_seconds,
        ReportMetric.MEAN_SIZE_BYTES: f.mean_size_bytes,
        ReportMetric.TOTAL_SIZE_BYTES: f.total_size_bytes,
        ReportMetric.VERIFICATION_COVERAGE: fig.percent(int(row.verified or 0), f.completed),
    }[ReportMetric(metric)]


async def generate(
    session: AsyncSession,
    report: AnalyticsReport,
    *,
    trigger: str,
    by: int | None,
    now: datetime,
) -> AnalyticsReportResult:
    """Compute the report over its window ending `now`, from its team's backups, and keep
    the rows as its next version."""
    period = fig.parse_window(report.window, now)
    groups = _group(session, report.group_by)
    stmt = select(*groups, *fig.backup_columns()).where(
        fig.backup_filter(period), Backup.team_id == report.team_id
    )
    filters = report.filters
    if "server_id" in filters:
        stmt = stmt.where(Backup.server_id == filters["server_id"])
    if "database_name" in filters:
        stmt = stmt.where(Backup.database_name == filters["database_name"])
    if "db_type" in filters:
        stmt = stmt.where(Backup.db_type == filters["db_type"])
    if groups:
        stmt = stmt.group_by(*groups).order_by(*groups)
    names = [g.name for g in groups]
    rows = []
    for row in (await session.execute(stmt.limit(MAX_ROWS))).all():
        if not groups and not row.finished:
            continue  # no backup at all: no row, as a grouped report would have none
        rows.append(
            {
                **{n: _key(n, row._mapping[n]) for n in names},
                **{m: _value(m, row) for m in report.metrics},
            }
        )
    report.last_version += 1
    if trigger == "schedule":
        report.next_run_at = next_slot(report, now)
    result = AnalyticsReportResult(
        report_id=report.id,
        team_id=report.team_id,
        version=report.last_version,
        trigger=trigger,
        window_start=period.start,
        window_end=period.end,
        columns=[*names, *report.metrics],
        rows=rows,
        row_count=len(rows),
        generated_by=by,
        generated_at=now,
    )
    session.add(result)
    await session.flush()
    return result


def versions_query(report: AnalyticsReport, *, with_rows: bool = False) -> Select[Any]:
    """A report's versions, newest first; their rows only when asked (they can be long)."""
    stmt = (
        select(AnalyticsReportResult)
        .where(AnalyticsReportResult.report_id == report.id)
        .order_by(AnalyticsReportResult.version.desc())
    )
    return stmt if with_rows else stmt.options(defer(AnalyticsReportResult.rows, raiseload=True))


async def get_version(
    session: AsyncSession, report: AnalyticsReport, version: int
) -> AnalyticsReportResult:
    found: AnalyticsReportResult | None = await session.scalar(
        versions_query(report, with_rows=True).where(AnalyticsReportResult.version == version)
    )
    if found is None:
        raise NotFound("Report version", version)
    return found


async def due(session: AsyncSession, now: datetime) -> list[AnalyticsReport]:
    """Scheduled reports whose slot has come, oldest slot first."""
    stmt = (
        select(AnalyticsReport)
        .where(AnalyticsReport.next_run_at <= now)
        .order_by(AnalyticsReport.next_run_at)
        .limit(DUE_BATCH)
    )
    return list((await session.scalars(stmt)).all())


def as_json(result: AnalyticsReportResult) -> bytes:
    return json.dumps(result_out(result).model_dump(mode="json"), indent=2).encode()


def _cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text: no formula from a database name."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return f"'{value}"
    return value


def as_csv(result: AnalyticsReportResult) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=result.columns, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: _cell(row.get(k)) for k in result.columns})
    return out.getvalue().encode()
