"""Threshold rules and the alert state machine, driven by an injected clock:
pending -> firing -> acknowledged -> resolved, with audit, events and permissions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from opscenter.core.events import Event
from opscenter.models import AuditLog, ResourceAlertRule
from opscenter.resources import alerts
from opscenter.resources.service import collect_round
from tests.conftest import Api, UserFactory

T0 = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
RULES = "/api/v1/resources/rules"


async def step(api: Api, rule_id: int, label: str, value: float, now: datetime) -> list[Event]:
    """One evaluation of one series, as a collection round makes it."""
    ctx = api.app.state.ctx
    async with ctx.db.write_session() as session:
        rule = await session.get(ResourceAlertRule, rule_id)
        assert rule is not None
        reading = alerts.Reading("host", None, None, "disk_used_percent", label, value)
        events = await alerts.evaluate(session, [rule], [reading], now)
        await session.commit()
    return events


async def alert_of(admin: httpx.AsyncClient, rule_id: int) -> dict[str, Any] | None:
    items = (await admin.get("/api/v1/resources/alerts", params={"limit": 1000})).json()["items"]
    mine = [a for a in items if a["rule_id"] == rule_id]
    return mine[0] if mine else None


async def test_an_alert_fires_is_acknowledged_and_resolves(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    label = f"/mnt/{uuid.uuid4().hex[:8]}"
    r = await admin.post(
        RULES,
        json={
            "name": "disk almost full",
            "metric": "disk_used_percent",
            "label": label,
            "operator": ">",
            "threshold": 90,
            "for_seconds": 60,
            "severity": "warning",
            "open_incident": True,
        },
    )
    assert r.status_code == 201, r.text
    rule_id = r.json()["id"]

    assert await step(api, rule_id, label, 95, T0) == []
    pending = await alert_of(admin, rule_id)
    assert pending is not None and pending["status"] == "pending"
    assert await step(api, rule_id, label, 96, T0 + timedelta(seconds=30)) == []

    (fired,) = await step(api, rule_id, label, 97, T0 + timedelta(seconds=60))
    assert fired.type == "resource_alert.fired"
    assert fired.data["open_incident"] is True and fired.data["severity"] == "warning"
    alert = await alert_of(admin, rule_id)
    assert alert is not None and alert["status"] == "firing" and alert["value"] == 97
    alert_id = alert["id"]
    ack = f"/api/v1/resources/alerts/{alert_id}/acknowledge"

    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        r = await c.post(ack, json={"note": "mine"})
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
        assert (await c.get(f"/api/v1/resources/alerts/{alert_id}")).status_code == 200
    async with api.client() as anonymous:
        assert (await anonymous.post(ack)).status_code == 401

    operator = await make_user("operator")
    ctx = api.app.state.ctx
    async with ctx.events.subscribe() as queue, operator.client(api) as c:
        r = await c.post(ack, json={"note": "cleaning /var/log"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "acknowledged" and body["acknowledged_by"] == operator.username
        assert body["ack_note"] == "cleaning /var/log" and body["acknowledged_at"]
        event = queue.get_nowait()
        assert event.type == "resource_alert.acknowledged" and event.data["alert_id"] == alert_id
        bad = await c.post(ack, json={"note": "x", "silence": True})
        assert bad.status_code == 422
        r = await c.patch(f"/api/v1/resources/alerts/{alert_id}", json={"severity": "critical"})
        assert r.status_code == 200 and r.json()["severity"] == "critical"
        r = await c.patch(f"/api/v1/resources/alerts/{alert_id}", json={"severity": "dire"})
        assert r.status_code == 422
        r = await c.post(f"/api/v1/resources/alerts/{alert_id}/unacknowledge")
        assert r.status_code == 200 and r.json()["status"] == "firing"
        assert r.json()["acknowledged_by"] is None
        assert (await c.post(ack)).json()["status"] == "acknowledged"  # no body: no note

    # Still over the threshold: an acknowledgment is not a silence, nothing changes.
    assert await step(api, rule_id, label, 98, T0 + timedelta(seconds=90)) == []
    (resolved,) = await step(api, rule_id, label, 50, T0 + timedelta(seconds=120))
    assert resolved.type == "resource_alert.resolved"
    alert = await alert_of(admin, rule_id)
    assert alert is not None and alert["status"] == "resolved"
    assert alert["resolved_at"] == "2031-03-01T12:02:00Z" and alert["acknowledged_by"]
    r = await admin.post(ack)
    assert r.status_code == 409 and r.json()["code"] == "ALERT_NOT_OPEN"

    # A condition that clears before its for-duration leaves nothing behind.
    await step(api, rule_id, label, 99, T0 + timedelta(seconds=200))
    await step(api, rule_id, label, 10, T0 + timedelta(seconds=230))
    statuses = [
        a["status"]
        for a in (await admin.get("/api/v1/resources/alerts", params={"limit": 1000})).json()[
            "items"
        ]
        if a["rule_id"] == rule_id
    ]
    assert statuses == ["resolved"]

    async with ctx.db.read_session() as session:
        actions = set(
            (
                await session.scalars(
                    select(AuditLog.action).where(AuditLog.resource_id == str(alert_id))
                )
            ).all()
        )
    assert {
        "resource_alert.acknowledge",
        "resource_alert.unacknowledge",
        "resource_alert.severity",
    } <= actions


async def test_a_collection_round_fires_a_rule_on_real_values(
    api: Api, admin: httpx.AsyncClient
) -> None:
    r = await admin.post(
        RULES,
        json={
            "name": f"memory exists {uuid.uuid4().hex[:6]}",
            "metric": "memory_total_bytes",
            "operator": ">",
            "threshold": 0,
            "severity": "info",
        },
    )
    rule_id = r.json()["id"]
    ctx = api.app.state.ctx
    async with ctx.events.subscribe() as queue:
        await collect_round(ctx, only={"host"})
        fired = [queue.get_nowait() for _ in range(queue.qsize())]
    assert any(e.type == "resource_alert.fired" and e.data["rule_id"] == rule_id for e in fired)
    alert = await alert_of(admin, rule_id)
    assert alert is not None and alert["status"] == "firing" and alert["source"] == "host"
    assert (await admin.delete(f"{RULES}/{rule_id}")).status_code == 204
    assert await alert_of(admin, rule_id) is None  # its alerts went with it


async def test_rules_refuse_bad_input_wrong_roles_and_other_teams(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    good = {"name": "cpu", "metric": "cpu_percent", "operator": ">", "threshold": 90}
    before = (await admin.get(RULES)).json()["total"]
    for body in (
        {**good, "metric": "cpu"},
        {**good, "operator": "=="},
        {**good, "threshold": "NaN"},
        {**good, "for_seconds": -1},
        {**good, "severity": "apocalyptic"},
        {**good, "team_id": 1, "role": "admin", "extra": 1},
        {**good, "operator": "full_within_days"},  # cpu has no forecast
        {**good, "name": ""},
    ):
        r = await admin.post(RULES, json=body)
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR", body
    r = await admin.post(RULES, json={**good, "server_id": 2_000_000})
    assert r.status_code == 404
    assert (await admin.get(RULES)).json()["total"] == before  # nothing half written

    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        assert (await c.post(RULES, json=good)).status_code == 403
    async with api.client() as anonymous:
        assert (await anonymous.post(RULES, json=good)).status_code == 401

    r = await admin.post(RULES, json={**good, "operator": ">=", "for_seconds": 30})
    assert r.status_code == 201
    rule = r.json()
    r = await admin.patch(f"{RULES}/{rule['id']}", json={"threshold": 95, "is_enabled": False})
    assert r.status_code == 200 and r.json()["threshold"] == 95 and not r.json()["is_enabled"]
    r = await admin.patch(f"{RULES}/{rule['id']}", json={"operator": "full_within_days"})
    assert r.status_code == 422

    team = await admin.post("/api/v1/users/teams", json={"name": f"t-{uuid.uuid4().hex[:6]}"})
    outsider = await make_user("operator", team_ids=[team.json()["id"]])
    async with outsider.client(api) as c:
        assert (await c.get(f"{RULES}/{rule['id']}")).status_code == 404
        assert (await c.patch(f"{RULES}/{rule['id']}", json={"threshold": 1})).status_code == 404
        assert (await c.delete(f"{RULES}/{rule['id']}")).status_code == 404
        assert rule["id"] not in {x["id"] for x in (await c.get(RULES)).json()["items"]}
        r = await c.post(RULES, json={**good, "team_id": rule["team_id"]})
        assert r.status_code == 404
    assert (await admin.delete(f"{RULES}/{rule['id']}")).status_code == 204
    assert (await admin.delete(f"{RULES}/{rule['id']}")).status_code == 404


async def test_another_teams_alert_is_a_404(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    label = f"/mnt/{uuid.uuid4().hex[:8]}"
    r = await admin.post(
        RULES,
        json={
            "name": "full",
            "metric": "disk_used_percent",
            "label": label,
            "operator": ">",
            "threshold": 1,
        },
    )
    rule_id = r.json()["id"]
    await step(api, rule_id, label, 50, T0)
    alert = await alert_of(admin, rule_id)
    assert alert is not None and alert["status"] == "firing"
    team = await admin.post("/api/v1/users/teams", json={"name": f"t-{uuid.uuid4().hex[:6]}"})
    outsider = await make_user("operator", team_ids=[team.json()["id"]])
    async with outsider.client(api) as c:
        assert (await c.get(f"/api/v1/resources/alerts/{alert['id']}")).status_code == 404
        r = await c.post(f"/api/v1/resources/alerts/{alert['id']}/acknowledge")
        assert r.status_code == 404
        items = (await c.get("/api/v1/resources/alerts")).json()["items"]
        assert alert["id"] not in {a["id"] for a in items}
    await admin.delete(f"{RULES}/{rule_id}")
