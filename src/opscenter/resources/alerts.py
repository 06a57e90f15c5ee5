"""Threshold rules and the alert state machine:
pending (condition holds, for-duration not over) -> firing -> acknowledged -> resolved.

An acknowledgment is not a silence: the alert stays open until its condition clears, and
then it resolves whoever acknowledged it. Every step takes `now`, so tests drive the clock.
"""

from __future__ import annotations

import operator as op
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.errors import Conflict, InvalidInput
from opscenter.core.events import Event
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.models import AlertStatus, ResourceAlert, ResourceAlertRule, Server
from opscenter.resources.schemas import (
    FORECASTABLE,
    AlertOut,
    Operator,
    RuleIn,
    RuleOut,
    RuleUpdate,
)

OPEN = (AlertStatus.PENDING, AlertStatus.FIRING, AlertStatus.ACKNOWLEDGED)
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": op.gt,
    ">=": op.ge,
    "<": op.lt,
    "<=": op.le,
    "full_within_days": op.le,  # days left <= threshold
}
FORECAST = "full_within_days"
OPERATOR_TYPE = Operator


class AlertNotOpen(Conflict):
    code = "ALERT_NOT_OPEN"


@dataclass(frozen=True)
class Reading:
    """One series' newest value in a round (or, for forecast rules, its days left)."""

    source: str
    team_id: int | None
    server_id: int | None
    metric: str
    label: str
    value: float


def rule_out(rule: ResourceAlertRule) -> RuleOut:
    return RuleOut.model_validate(rule)


def alert_out(alert: ResourceAlert) -> AlertOut:
    return AlertOut.model_validate(alert)


def rules_query(principal: Principal) -> Select[ResourceAlertRule]:
    return readable(select(ResourceAlertRule), ResourceAlertRule, principal).order_by(
        ResourceAlertRule.id
    )


def alerts_query(
    principal: Principal,
    *,
    status: str | None = None,
    severity: str | None = None,
    server_id: int | None = None,
) -> Select[ResourceAlert]:
    stmt = readable(select(ResourceAlert), ResourceAlert, principal)
    if status == "open":
        stmt = stmt.where(ResourceAlert.status.in_(OPEN))
    elif status:
        stmt = stmt.where(ResourceAlert.status == status)
    if severity:
        stmt = stmt.where(ResourceAlert.severity == severity)
    if server_id is not None:
        stmt = stmt.where(ResourceAlert.server_id == server_id)
    return stmt.order_by(ResourceAlert.id.desc())


def _check_rule(metric: str, operator: str) -> None:
    if operator == FORECAST and metric not in FORECASTABLE:
        raise InvalidInput(
            f"'full_within_days' needs a metric with a forecast: one of {', '.join(FORECASTABLE)}"
        )


async def create_rule(
    session: AsyncSession, principal: Principal, data: RuleIn
) -> ResourceAlertRule:
    _check_rule(data.metric, data.operator)
    team_id = data.team_id or (min(principal.team_ids) if principal.team_ids else None)
    if team_id is None:
        raise InvalidInput("Give team_id: you belong to no team")
    check_team_access(principal, team_id)
    if data.server_id is not None:
        server = await get_readable(session, Server, data.server_id, principal, name="Server")
        if server.team_id != team_id:
            raise InvalidInput("The server belongs to another team than the rule; give its team_id")
    rule = ResourceAlertRule(**data.model_dump(exclude={"team_id"}), team_id=team_id)
    session.add(rule)
    await session.flush()
    return rule


async def get_rule(session: AsyncSession, principal: Principal, rule_id: int) -> ResourceAlertRule:
    return await get_readable(session, ResourceAlertRule, rule_id, principal, name="Alert rule")


async def update_rule(
    session: AsyncSession, principal: Principal, rule_id: int, data: RuleUpdate
) -> ResourceAlertRule:
    rule = await get_rule(session, principal, rule_id)
    changes = data.model_dump(exclude_unset=True)
    if any(v is None for v in changes.values()):
        raise InvalidInput("A field given must have a value; leave it out to keep it")
    _check_rule(rule.metric, changes.get("operator", rule.operator))
    for key, value in changes.items():
        setattr(rule, key, value)
    await session.flush()
    return rule


async def delete_rule(
    session: AsyncSession, principal: Principal, rule_id: int
) -> ResourceAlertRule:
    rule = await get_rule(session, principal, rule_id)
    await session.delete(rule)
    await session.flush()
    return rule


async def get_alert(session: AsyncSession, principal: Principal, alert_id: int) -> ResourceAlert:
    return await get_readable(session, ResourceAlert, alert_id, principal, name="Alert")


def _event(kind: str, alert: ResourceAlert, **extra: object) -> Event:
    data: dict[str, object] = {
        "alert_id": alert.id,
        "rule_id": alert.rule_id,
        "server_id": alert.server_id,
        "source": alert.source,
        "metric": alert.metric,
        "label": alert.label,
        "value": alert.value,
        # Notifications read `severity`: only firing is news at the alert's own level;
        # acknowledgments, severity changes and resolutions are info.
        "severity": alert.severity if kind == "fired" else "info",
        "alert_severity": alert.severity,
        "status": alert.status,
        "message": alert.message,
        **extra,
    }
    if data["server_id"] is None:
        del data["server_id"]
    return Event(f"resource_alert.{kind}", data, team_id=alert.team_id)


async def acknowledge(
    session: AsyncSession, principal: Principal, alert_id: int, note: str, now: datetime
) -> tuple[ResourceAlert, Event]:
    alert = await get_alert(session, principal, alert_id)
    if alert.status not in (AlertStatus.FIRING, AlertStatus.ACKNOWLEDGED):
        raise AlertNotOpen(
            f"Alert {alert_id} is {alert.status}: only a firing alert can be acknowledged"
        )
    alert.status = AlertStatus.ACKNOWLEDGED
    alert.acknowledged_at = now
    alert.acknowledged_by = principal.username
    alert.ack_note = note or None
    await session.flush()
    return alert, _event("acknowledged", alert, acknowledged_by=principal.username, note=note)


async def unacknowledge(
    session: AsyncSession, principal: Principal, alert_id: int
) -> tuple[ResourceAlert, Event]:
    alert = await get_alert(session, principal, alert_id)
    if alert.status != AlertStatus.ACKNOWLEDGED:
        raise AlertNotOpen(f"Alert {alert_id} is {alert.status}, not acknowledged")
    alert.status = AlertStatus.FIRING
    alert.acknowledged_at = alert.acknowledged_by = alert.ack_note = None
    await session.flush()
    return alert, _event("unacknowledged", alert)


async def change_severity(
    session: AsyncSession, principal: Principal, alert_id: int, severity: str
) -> tuple[ResourceAlert, str, Event]:
    alert = await get_alert(session, principal, alert_id)
    if alert.status == AlertStatus.RESOLVED:
        raise AlertNotOpen(f"Alert {alert_id} is resolved; its severity is history")
    before, alert.severity = alert.severity, severity
    await session.flush()
    return alert, before, _event("severity_changed", alert, previous_severity=before)


def applies(rule: ResourceAlertRule, reading: Reading) -> bool:
    if reading.metric != rule.metric or (rule.label and rule.label != reading.label):
        return False
    if rule.server_id is not None:
        return reading.server_id == rule.server_id
    return reading.team_id is None or reading.team_id == rule.team_id


def _message(rule: ResourceAlertRule, reading: Reading) -> str:
    what = f"{reading.metric}{f' {reading.label}' if reading.label else ''} on {reading.source}"
    if rule.operator == FORECAST:
        return f"{what} is full in {reading.value:.1f} days (rule: within {rule.threshold:g})"[:500]
    return f"{what} is {reading.value:g} ({rule.operator} {rule.threshold:g})"[:500]


def _due(alert: ResourceAlert, rule: ResourceAlertRule, now: datetime) -> bool:
    return (now - alert.started_at).total_seconds() >= rule.for_seconds


async def evaluate(
    session: AsyncSession,
    rules: Sequence[ResourceAlertRule],
    readings: Sequence[Reading],
    now: datetime,
) -> list[Event]:
    """Advance every (rule, series) pair one step; the events to publish after commit.
    A series missing from `readings` (its source failed this round) keeps its state."""
    events: list[Event] = []
    if not rules:
        return events
    rule_ids = [r.id for r in rules]
    open_rows = await session.scalars(
        select(ResourceAlert).where(
            ResourceAlert.rule_id.in_(rule_ids), ResourceAlert.status.in_(OPEN)
        )
    )
    open_by = {(a.rule_id, a.source, a.label): a for a in open_rows}
    for rule in rules:
        for reading in readings:
            if not applies(rule, reading):
                continue
            key = (rule.id, reading.source, reading.label)
            alert = open_by.get(key)
            holds = COMPARE[rule.operator](reading.value, rule.threshold)
            if holds and alert is None:
                alert = ResourceAlert(
                    rule_id=rule.id,
                    team_id=rule.team_id,
                    source=reading.source,
                    server_id=reading.server_id,
                    metric=reading.metric,
                    label=reading.label,
                    severity=rule.severity,
                    status=AlertStatus.PENDING,
                    value=reading.value,
                    message=_message(rule, reading),
                    started_at=now,
                )
                session.add(alert)
                open_by[key] = alert
            elif holds and alert is not None:
                alert.value, alert.message = reading.value, _message(rule, reading)
            pending = alert is not None and alert.status == AlertStatus.PENDING
            if holds and alert is not None and pending and _due(alert, rule, now):
                alert.status, alert.fired_at = AlertStatus.FIRING, now
                await session.flush()
                events.append(
                    _event(
                        "fired",
                        alert,
                        rule_name=rule.name,
                        threshold=rule.threshold,
                        operator=rule.operator,
                        # Incidents (another domain) open one when a rule asks.
                        open_incident=rule.open_incident,
                    )
                )
            if not holds and alert is not None:
                del open_by[key]
                if alert.status == AlertStatus.PENDING:
                    await session.delete(alert)  # it never fired: nothing to tell
                    continue
                alert.status, alert.resolved_at, alert.value = (
                    AlertStatus.RESOLVED,
                    now,
                    reading.value,
                )
                events.append(_event("resolved", alert))
    await session.flush()
    return events
