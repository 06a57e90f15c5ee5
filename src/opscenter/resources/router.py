"""Resource monitoring (seed 002): `/resources/...`: metrics, infrastructure, capacity
forecasts, alert rules and alerts with acknowledgment."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.clock import utcnow
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.db import release
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.pagination import Page, Paging, PathId, QueryId, paginate
from opscenter.core.principal import Principal
from opscenter.jobs import service as jobs
from opscenter.jobs.accept import accepted
from opscenter.jobs.schemas import Accepted
from opscenter.resources import alerts, service
from opscenter.resources.schemas import (
    AcknowledgeIn,
    AlertOut,
    AlertUpdate,
    ForecastItem,
    HistoryOut,
    InfrastructureItem,
    Metric,
    RuleIn,
    RuleOut,
    RuleUpdate,
    Severity,
    SourceMetrics,
)

router = APIRouter(prefix="/resources", tags=["Resources"])
ReadResources = Annotated[Principal, Depends(require("read:resources"))]
WriteResources = Annotated[Principal, Depends(require("write:resources"))]
Duration = Annotated[
    str, Query(max_length=12, description="A number and a unit: 90s, 15m, 24h, 7d")
]
COLLECT_JOB = "resource_collection"


@router.get("/metrics/current", response_model=Page[SourceMetrics], responses=responses(NotFound))
async def current_metrics(
    principal: ReadResources,
    session: SessionDep,
    server_id: QueryId = None,
    storage_id: QueryId = None,
) -> Page[SourceMetrics]:
    """The newest collected round of each source: this host, servers, storage providers."""
    chosen = None
    if server_id is not None or storage_id is not None:
        chosen = [await service.source_of(session, principal, server_id, storage_id)]
    return Page.whole(await service.current(session, principal, chosen))


@router.get(
    "/metrics/history",
    response_model=HistoryOut,
    responses=responses(NotFound, InvalidInput),
)
async def metrics_history(
    principal: ReadResources,
    session: SessionDep,
    metric: Metric,
    server_id: QueryId = None,
    storage_id: QueryId = None,
    label: Annotated[str | None, Query(max_length=200)] = None,
    window: Duration = "24h",
    step: Annotated[str | None, Query(max_length=12)] = None,
) -> HistoryOut:
    """Mean, min and max per step over the window; no server_id nor storage_id = this host."""
    return await service.history(
        session,
        principal,
        metric=metric,
        server_id=server_id,
        storage_id=storage_id,
        label=label,
        window=window,
        step=step,
    )


@router.get("/infrastructure", response_model=Page[InfrastructureItem])
async def infrastructure(principal: ReadResources, session: SessionDep) -> Page[InfrastructureItem]:
    """Every server (and this host) with its latest metrics, health and open alerts."""
    return Page.whole(await service.infrastructure(session, principal))


@router.get(
    "/capacity/forecast", response_model=Page[ForecastItem], responses=responses(InvalidInput)
)
async def capacity_forecast(
    principal: ReadResources, session: SessionDep, window: Duration = "30d"
) -> Page[ForecastItem]:
    """Days until each disk, database and storage provider is full, soonest first."""
    return Page.whole(await service.forecasts(session, principal, window))


@router.post(
    "/collect",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(Forbidden, Conflict, InvalidInput),
)
async def collect_now(principal: WriteResources, session: SessionDep, request: Request) -> Accepted:
    """Run one collection round now, as a job (the periodic one runs on its own)."""
    if await jobs.holding(session, COLLECT_JOB) is not None:
        raise Conflict("A collection round is already queued or running; wait for it")
    if not principal.team_ids:
        raise InvalidInput("You belong to no team; a job needs one")
    job = await jobs.create_job(
        session,
        principal,
        kind=COLLECT_JOB,
        team_id=min(principal.team_ids),
        lock_key=COLLECT_JOB,
        resource_type="collection",
        resource_id=0,
        params={},
    )
    await audit.record(
        session,
        action="resources.collect",
        actor=principal,
        resource_type="job",
        resource_id=job.id,
        origin=origin_of(request),
    )
    return accepted(request, job.id, job.id, "Collection round queued", status="queued")


# --- alerts ---------------------------------------------------------------------------

AlertState = Literal["open", "pending", "firing", "acknowledged", "resolved"]


@router.get("/alerts", response_model=Page[AlertOut])
async def list_alerts(
    principal: ReadResources,
    session: SessionDep,
    paging: Paging,
    status: AlertState | None = None,
    severity: Severity | None = None,
    server_id: QueryId = None,
) -> Page[AlertOut]:
    """Newest first; `status=open` is pending, firing and acknowledged ones."""
    stmt = alerts.alerts_query(principal, status=status, severity=severity, server_id=server_id)
    rows, total = await paginate(session, stmt, paging)
    return Page.of([alerts.alert_out(a) for a in rows], total, paging)


@router.get("/alerts/{alert_id}", response_model=AlertOut, responses=responses(NotFound))
async def get_alert(alert_id: PathId, principal: ReadResources, session: SessionDep) -> AlertOut:
    return alerts.alert_out(await alerts.get_alert(session, principal, alert_id))


@router.post(
    "/alerts/{alert_id}/acknowledge",
    response_model=AlertOut,
    responses=responses(NotFound, Forbidden, Conflict),
)
async def acknowledge_alert(
    alert_id: PathId,
    principal: WriteResources,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
    body: Annotated[AcknowledgeIn | None, Body()] = None,
) -> AlertOut:
    """Someone is on it: by, at and a note. Not a silence: the alert stays open until its
    condition clears, and resolves then."""
    note = body.note if body else ""
    alert, event = await alerts.acknowledge(session, principal, alert_id, note, utcnow())
    await audit.record(
        session,
        action="resource_alert.acknowledge",
        actor=principal,
        resource_type="resource_alert",
        resource_id=alert.id,
        details={"note": note},
        origin=origin_of(request),
        team_id=alert.team_id,
    )
    out = alerts.alert_out(alert)
    await release(session)
    ctx.events.publish(event)
    return out


@router.post(
    "/alerts/{alert_id}/unacknowledge",
    response_model=AlertOut,
    responses=responses(NotFound, Forbidden, Conflict),
)
async def unacknowledge_alert(
    alert_id: PathId, principal: WriteResources, session: SessionDep, ctx: Ctx, request: Request
) -> AlertOut:
    alert, event = await alerts.unacknowledge(session, principal, alert_id)
    await audit.record(
        session,
        action="resource_alert.unacknowledge",
        actor=principal,
        resource_type="resource_alert",
        resource_id=alert.id,
        origin=origin_of(request),
        team_id=alert.team_id,
    )
    out = alerts.alert_out(alert)
    await release(session)
    ctx.events.publish(event)
    return out


@router.patch(
    "/alerts/{alert_id}",
    response_model=AlertOut,
    responses=responses(NotFound, Forbidden, Conflict),
)
async def change_alert_severity(
    alert_id: PathId,
    body: AlertUpdate,
    principal: WriteResources,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> AlertOut:
    alert, before, event = await alerts.change_severity(session, principal, alert_id, body.severity)
    await audit.record(
        session,
        action="resource_alert.severity",
        actor=principal,
        resource_type="resource_alert",
        resource_id=alert.id,
        details={"from": before, "to": body.severity},
        origin=origin_of(request),
        team_id=alert.team_id,
    )
    out = alerts.alert_out(alert)
    await release(session)
    ctx.events.publish(event)
    return out


# --- rules ----------------------------------------------------------------------------


@router.get("/rules", response_model=Page[RuleOut])
async def list_rules(
    principal: ReadResources, session: SessionDep, paging: Paging
) -> Page[RuleOut]:
    rows, total = await paginate(session, alerts.rules_query(principal), paging)
    return Page.of([alerts.rule_out(r) for r in rows], total, paging)


@router.post(
    "/rules",
    response_model=RuleOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(NotFound, Forbidden, InvalidInput),
)
async def create_rule(
    body: RuleIn, principal: WriteResources, session: SessionDep, request: Request
) -> RuleOut:
    rule = await alerts.create_rule(session, principal, body)
    out = alerts.rule_out(rule)
    await audit.record(
        session,
        action="resource_rule.create",
        actor=principal,
        resource_type="resource_rule",
        resource_id=rule.id,
        details=out.model_dump(mode="json", exclude={"created_at", "updated_at"}),
        origin=origin_of(request),
        team_id=rule.team_id,
    )
    return out


@router.get("/rules/{rule_id}", response_model=RuleOut, responses=responses(NotFound))
async def get_rule(rule_id: PathId, principal: ReadResources, session: SessionDep) -> RuleOut:
    return alerts.rule_out(await alerts.get_rule(session, principal, rule_id))


@router.patch(
    "/rules/{rule_id}",
    response_model=RuleOut,
    responses=responses(NotFound, Forbidden, InvalidInput),
)
async def update_rule(
    rule_id: PathId,
    body: RuleUpdate,
    principal: WriteResources,
    session: SessionDep,
    request: Request,
) -> RuleOut:
    rule = await alerts.update_rule(session, principal, rule_id, body)
    await audit.record(
        session,
        action="resource_rule.update",
        actor=principal,
        resource_type="resource_rule",
        resource_id=rule.id,
        details=body.model_dump(mode="json", exclude_unset=True),
        origin=origin_of(request),
        team_id=rule.team_id,
    )
    return alerts.rule_out(rule)


@router.delete(
    "/rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound, Forbidden),
)
async def delete_rule(
    rule_id: PathId, principal: WriteResources, session: SessionDep, request: Request
) -> None:
    """Its alerts go with it."""
    rule = await alerts.delete_rule(session, principal, rule_id)
    await audit.record(
        session,
        action="resource_rule.delete",
        actor=principal,
        resource_type="resource_rule",
        resource_id=rule_id,
        details={"name": rule.name},
        origin=origin_of(request),
        team_id=rule.team_id,
    )
