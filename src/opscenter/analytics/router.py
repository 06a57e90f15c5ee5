"""Analytics API (seed 002): metrics, trends, predictions, insights, custom reports and
the dashboard's data."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from opscenter.analytics import dashboard, insights, reports, service
from opscenter.analytics.figures import parse_step, parse_window
from opscenter.analytics.schemas import (
    DashboardOut,
    DismissIn,
    InsightOut,
    MetricsOut,
    PredictionOut,
    ReportIn,
    ReportOut,
    ResultOut,
    ResultSummary,
    TrendMetric,
    TrendOut,
)
from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep, publish_after_commit
from opscenter.core.errors import Conflict, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal

router = APIRouter(prefix="/analytics", tags=["Analytics"])
ReadAnalytics = Annotated[Principal, Depends(require("read:analytics"))]
WriteAnalytics = Annotated[Principal, Depends(require("write:analytics"))]
WindowParam = Annotated[
    str, Query(max_length=8, description="The last N days up to now: 7d, 30d, ... (1 to 366)")
]
Fingerprint = Annotated[str, Path(pattern="^[0-9a-f]{64}$")]
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _announce(request: Request, action: str, data: dict[str, Any], team: int) -> None:
    publish_after_commit(request, Event(f"analytics.{action}", data, team_id=team))


@router.get("/metrics", response_model=MetricsOut, responses=responses(InvalidInput))
async def get_metrics(
    principal: ReadAnalytics, session: SessionDep, window: WindowParam = "30d"
) -> MetricsOut:
    """Backup success rate, mean duration and size per target, RPO compliance,
    verification coverage, restore-test RTO, incident MTTA and MTTR, open findings by
    severity and imported spend, for the caller's teams over the window."""
    return await service.metrics(session, principal, parse_window(window, utcnow()))


@router.get("/trends", response_model=TrendOut, responses=responses(InvalidInput))
async def get_trend(
    principal: ReadAnalytics,
    session: SessionDep,
    metric: TrendMetric = TrendMetric.BACKUPS,
    window: WindowParam = "30d",
    step: Annotated[str, Query(max_length=8, description="6h, 1d, 7d, ...")] = "1d",
) -> TrendOut:
    """One metric per step over the window, with its Theil-Sen slope per day."""
    period = parse_window(window, utcnow())
    return await service.trend(session, principal, metric, period, parse_step(step, period))


@router.get("/predictions", response_model=Page[PredictionOut])
async def get_predictions(
    principal: ReadAnalytics,
    session: SessionDep,
    metric: TrendMetric | None = None,
    weeks: Annotated[int, Query(ge=1, le=12)] = 4,
) -> Page[PredictionOut]:
    """The next `weeks` weeks of a metric (or of the usual ones), each with its method and
    its 95 % prediction interval; none where fewer than 4 of the last 12 weeks have data."""
    now = utcnow()
    chosen = [metric] if metric else list(service.PREDICTED)
    return Page.whole([await service.prediction(session, principal, m, weeks, now) for m in chosen])


@router.get("/insights", response_model=Page[InsightOut])
async def list_insights(
    principal: ReadAnalytics,
    session: SessionDep,
    paging: Paging,
    include_dismissed: bool = False,
    kind: Annotated[str | None, Query(max_length=32)] = None,
) -> Page[InsightOut]:
    """Anomalies found now by median and MAD per target, most severe first."""
    found = [
        i
        for i in await insights.compute(session, principal, utcnow())
        if (include_dismissed or not i.dismissed) and (kind is None or i.kind == kind)
    ]
    return Page.of(found[paging.offset : paging.offset + paging.limit], len(found), paging)


@router.post(
    "/insights/{fingerprint}/dismiss",
    response_model=InsightOut,
    responses=responses(NotFound, Conflict),
)
async def dismiss_insight(
    fingerprint: Fingerprint,
    request: Request,
    principal: WriteAnalytics,
    session: SessionDep,
    body: DismissIn | None = None,
) -> InsightOut:
    """Dismiss an insight: it stays dismissed however often the insights are recomputed
    (until its data changes, e.g. a new streak or another backup)."""
    reason = body.reason if body else ""
    out, row = await insights.dismiss(session, principal, fingerprint, reason, utcnow())
    await audit.record(
        session,
        action="analytics.insight_dismiss",
        actor=principal,
        resource_type="insight",
        resource_id=row.id,
        details={"fingerprint": fingerprint, "kind": out.kind, "reason": reason},
        origin=origin_of(request),
        team_id=row.team_id,
    )
    _announce(request, "insight_dismissed", {"fingerprint": fingerprint}, row.team_id)
    return out


@router.get("/dashboard-data", response_model=DashboardOut)
async def dashboard_data(principal: ReadAnalytics, session: SessionDep) -> DashboardOut:
    """The dashboard's figures, daily backups and open insights, in one call."""
    return await dashboard.data(session, principal, utcnow())


# -- custom reports -------------------------------------------------------------------------
@router.get("/reports", response_model=Page[ReportOut])
async def list_reports(
    principal: ReadAnalytics, session: SessionDep, paging: Paging
) -> Page[ReportOut]:
    rows, total = await paginate(session, reports.reports_query(principal), paging)
    return Page.of([reports.report_out(r) for r in rows], total, paging)


@router.post(
    "/reports",
    response_model=ReportOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidInput, Conflict, NotFound),
)
async def create_report(
    body: ReportIn, request: Request, principal: WriteAnalytics, session: SessionDep
) -> ReportOut:
    """Save a report: metrics, filters (server, database, type), grouping (target, team,
    day, week or none), window, and optionally a cron schedule to generate it on."""
    report = await reports.create_report(session, principal, body, utcnow())
    out = reports.report_out(report)
    await audit.record(
        session,
        action="analytics.report_create",
        actor=principal,
        resource_type="analytics_report",
        resource_id=report.id,
        details=body.model_dump(mode="json"),
        origin=origin_of(request),
        team_id=report.team_id,
    )
    _announce(request, "report_created", {"id": report.id, "name": report.name}, report.team_id)
    return out


@router.get("/reports/{report_id}", response_model=ReportOut, responses=responses(NotFound))
async def get_report(report_id: PathId, principal: ReadAnalytics, session: SessionDep) -> ReportOut:
    return reports.report_out(await reports.get_report(session, principal, report_id))


@router.delete(
    "/reports/{report_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound),
)
async def delete_report(
    report_id: PathId, request: Request, principal: WriteAnalytics, session: SessionDep
) -> Response:
    """Delete a report and every generated version of it."""
    report = await reports.get_report(session, principal, report_id)
    team, name = report.team_id, report.name
    await session.delete(report)
    await session.flush()
    await audit.record(
        session,
        action="analytics.report_delete",
        actor=principal,
        resource_type="analytics_report",
        resource_id=report_id,
        details={"name": name},
        origin=origin_of(request),
        team_id=team,
    )
    _announce(request, "report_deleted", {"id": report_id}, team)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/reports/{report_id}/generate",
    response_model=ResultOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(NotFound),
)
async def generate_report(
    report_id: PathId, request: Request, principal: WriteAnalytics, session: SessionDep
) -> ResultOut:
    """Generate the report now (one aggregate query, in the request): a new version."""
    report = await reports.get_report(session, principal, report_id)
    result = await reports.generate(
        session, report, trigger="manual", by=principal.user_id or None, now=utcnow()
    )
    await audit.record(
        session,
        action="analytics.report_generate",
        actor=principal,
        resource_type="analytics_report",
        resource_id=report.id,
        details={"version": result.version, "rows": len(result.rows)},
        origin=origin_of(request),
        team_id=report.team_id,
    )
    _announce(
        request,
        "report_generated",
        {"id": report.id, "version": result.version},
        report.team_id,
    )
    return reports.result_out(result)


@router.get(
    "/reports/{report_id}/versions",
    response_model=Page[ResultSummary],
    responses=responses(NotFound),
)
async def list_versions(
    report_id: PathId, principal: ReadAnalytics, session: SessionDep, paging: Paging
) -> Page[ResultSummary]:
    report = await reports.get_report(session, principal, report_id)
    rows, total = await paginate(session, reports.versions_query(report), paging)
    return Page.of([reports.summary_out(r) for r in rows], total, paging)


@router.get(
    "/reports/{report_id}/versions/{version}",
    response_model=ResultOut,
    responses=responses(NotFound),
)
async def get_version(
    report_id: PathId, version: Version, principal: ReadAnalytics, session: SessionDep
) -> ResultOut:
    report = await reports.get_report(session, principal, report_id)
    return reports.result_out(await reports.get_version(session, report, version))


@router.get(
    "/reports/{report_id}/versions/{version}/download",
    responses={
        **responses(NotFound),
        200: {
            "description": "The version as a file",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
    },
)
async def download_version(
    report_id: PathId,
    version: Version,
    principal: ReadAnalytics,
    session: SessionDep,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """One version as a file: JSON (the whole result) or CSV (its rows)."""
    report = await reports.get_report(session, principal, report_id)
    result = await reports.get_version(session, report, version)
    body = reports.as_csv(result) if format == "csv" else reports.as_json(result)
    media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
    name = f"analytics-report-{report.id}-v{version}.{format}"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
