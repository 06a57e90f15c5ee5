"""Incidents at /api/v1/infra/incidents (seed 004): validation, lifecycle, timeline,
alerts that repeat into the open incident, roles, teams and events."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from opscenter.auth.permissions import BUILTIN_ROLES
from opscenter.core.principal import Principal
from opscenter.models import Backup, Incident, StorageProvider
from opscenter.realtime import service as realtime
from tests.auth.test_auth import assert_unauthorized
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error, uid

INCIDENTS = "/api/v1/infra/incidents"


def seed_example(squad: str, **over: Any) -> dict[str, Any]:
    """Seed 004's CreateIncidentRequest example."""
    return {
        "title": "Database connection pool exhausted",
        "description": "API pods cannot get connections from the primary database",
        "severity": "critical",
        "squad": squad,
        "environment": "production",
        "affected_services": ["api", "checkout"],
        **over,
    }


async def incident_count(api: Api) -> int:
    async with api.app.state.ctx.db.read_session() as s:
        return int(await s.scalar(select(func.count(Incident.id))) or 0)


async def test_seed_example_creates_and_lists_newest_first(admin: httpx.AsyncClient) -> None:
    squad = uid("sq")
    r = await admin.post(INCIDENTS, json=seed_example(squad))
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["jira_id"] == f"INC-{first['id']}"
    assert first["status"] == "open" and first["allowed_transitions"] == [
        "investigating",
        "mitigated",
        "resolved",
    ]
    assert first["affected_services"] == ["api", "checkout"]
    assert first["created_at"].endswith("Z") and first["acknowledged_at"] is None
    second = (
        await admin.post(INCIDENTS, json=seed_example(squad, severity="low", environment="staging"))
    ).json()

    listed = (await admin.get(INCIDENTS, params={"squad": squad})).json()
    assert [i["id"] for i in listed["items"]] == [second["id"], first["id"]]
    assert listed["total"] == 2 and listed["offset"] == 0
    for params, expected in [
        ({"severity": "critical"}, [first["id"]]),
        ({"environment": "staging"}, [second["id"]]),
        ({"status": "open", "limit": 1}, [second["id"]]),
        ({"status": "open", "limit": 1, "offset": 1}, [first["id"]]),
        ({"status": "resolved"}, []),
    ]:
        r = await admin.get(INCIDENTS, params={"squad": squad, **params})
        assert [i["id"] for i in r.json()["items"]] == expected, params
    assert (await admin.get(f"{INCIDENTS}/{first['id']}")).json() == first


async def test_bad_input_is_refused_and_nothing_written(api: Api, admin: httpx.AsyncClient) -> None:
    before = await incident_count(api)
    squad = uid("sq")
    for bad in [
        seed_example(squad, title="ab"),
        seed_example(squad, title="x" * 201),
        seed_example(squad, description="too short"),
        seed_example(squad, severity="urgent"),
        seed_example(squad, environment="qa"),
        seed_example("has space"),
        seed_example(squad, title="bell\x07"),
        seed_example(squad, status="closed"),  # unknown on create: no smuggling
        seed_example(squad, commander_id=2**31),
        {k: v for k, v in seed_example(squad).items() if k != "squad"},
    ]:
        assert_error(await admin.post(INCIDENTS, json=bad), 422, "VALIDATION_ERROR")
    r = await admin.post(INCIDENTS, json=seed_example(squad, commander_id=999_999))
    assert_error(r, 422, "VALIDATION_ERROR")
    assert "999999" in r.json()["detail"]
    r = await admin.post(INCIDENTS, json=seed_example(squad, source_type="backup"))
    assert_error(r, 422, "VALIDATION_ERROR")
    assert await incident_count(api) == before
    assert_error(await admin.get(f"{INCIDENTS}/{2**31}"), 422, "VALIDATION_ERROR")
    assert_error(await admin.get(f"{INCIDENTS}/999999"), 404, "NOT_FOUND")
    assert_error(await admin.patch(f"{INCIDENTS}/999999", json={}), 404, "NOT_FOUND")


async def test_transitions_allowed_and_refused_with_timestamps(admin: httpx.AsyncClient) -> None:
    inc = (await admin.post(INCIDENTS, json=seed_example(uid("sq")))).json()
    url = f"{INCIDENTS}/{inc['id']}"

    async def move(target: str) -> httpx.Response:
        return await admin.patch(url, json={"status": target})

    r = await move("closed")  # closed only from resolved
    body = assert_error(r, 409, "INVALID_TRANSITION")
    assert "investigating, mitigated, resolved" in body["detail"]
    r = await move("mitigated")  # a move forward may skip states
    assert r.status_code == 200, r.text
    mitigated = r.json()
    assert mitigated["status"] == "mitigated"
    assert mitigated["acknowledged_at"] and mitigated["mitigated_at"]
    assert mitigated["time_to_acknowledge_seconds"] >= 0
    assert mitigated["allowed_transitions"] == ["resolved"]
    assert_error(await move("investigating"), 409, "INVALID_TRANSITION")  # no going back
    assert_error(await move("open"), 409, "INVALID_TRANSITION")
    resolved = (await move("resolved")).json()
    assert resolved["resolved_at"] and resolved["time_to_resolve_seconds"] >= 0
    assert resolved["allowed_transitions"] == ["investigating", "closed"]
    reopened = (await move("investigating")).json()  # resolved may reopen
    assert reopened["resolved_at"] is None and reopened["mitigated_at"] == mitigated["mitigated_at"]
    assert_error(await move("closed"), 409, "INVALID_TRANSITION")
    await move("resolved")
    closed = (await move("closed")).json()
    assert closed["closed_at"] and closed["allowed_transitions"] == []
    body = assert_error(await move("investigating"), 409, "INVALID_TRANSITION")
    assert "closed is final" in body["detail"]
    assert_error(await admin.patch(url, json={"title": "Late edit"}), 409, "CONFLICT")

    metrics = (await admin.get(f"{INCIDENTS}/metrics", params={"days": 1})).json()
    assert metrics["resolved"] >= 1 and metrics["mttr_seconds"] is not None


async def test_timeline_records_every_change(
    admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    helper = await make_user("operator")
    inc = (await admin.post(INCIDENTS, json=seed_example(uid("sq")))).json()
    url = f"{INCIDENTS}/{inc['id']}"
    r = await admin.patch(
        url,
        json={
            "severity": "high",
            "affected_services": ["api"],
            "commander_id": helper.id,
            "participant_ids": [helper.id, 1],
            "status": "investigating",
        },
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["commander"] == {"id": helper.id, "username": helper.username}
    assert {p["id"] for p in out["participants"]} == {helper.id, 1}
    r = await admin.patch(url, json={"participant_ids": [1], "severity": "high"})
    assert [p["id"] for p in r.json()["participants"]] == [1]

    lines = (await admin.get(f"{url}/timeline")).json()["items"]
    seen = [(e["kind"], e["field"], e["old_value"], e["new_value"]) for e in lines]
    assert seen[0] == ("created", "status", None, "open")
    assert ("field", "severity", "critical", "high") in seen
    assert ("field", "affected_services", "api, checkout", "api") in seen
    assert ("commander", "commander", None, helper.username) in seen
    assert ("participant_added", "participants", None, helper.username) in seen
    assert ("participant_removed", "participants", helper.username, None) in seen
    assert ("status", "status", "open", "investigating") in seen
    assert any(k == "timestamp" and f == "acknowledged_at" for k, f, _, _ in seen)
    # the unchanged severity of the second PATCH wrote nothing
    assert sum(1 for s in seen if s[1] == "severity") == 1
    assert all(e["actor"] == "admin" and e["at"].endswith("Z") for e in lines)
    ids = [e["id"] for e in lines]
    assert ids == sorted(ids)

    audit = (await admin.get("/api/v1/audit/logs", params={"limit": 1000})).json()
    actions = [
        e["action"] for e in audit["items"] if e.get("resource_id") in (inc["id"], str(inc["id"]))
    ]
    assert "incident.create" in actions and actions.count("incident.update") >= 2


async def test_an_alert_repeat_adds_to_the_open_incident(
    api: Api, admin: httpx.AsyncClient
) -> None:
    async with api.app.state.ctx.db.write_session() as s:
        storage = (await s.scalars(select(StorageProvider).order_by(StorageProvider.id))).first()
        assert storage is not None
        backup = Backup(
            team_id=storage.team_id,
            storage_id=storage.id,
            status="failed",
            db_type="files",
            database_name="x",
        )
        s.add(backup)
        await s.commit()
    body = seed_example(uid("sq"), source_type="backup", source_id=backup.id)
    first = await admin.post(INCIDENTS, json=body)
    assert first.status_code == 201, first.text
    again = await admin.post(INCIDENTS, json=body)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["alert_count"] == 2
    assert again.json()["source_type"] == "backup" and again.json()["source_id"] == backup.id
    timeline = (await admin.get(f"{INCIDENTS}/{first.json()['id']}/timeline")).json()["items"]
    assert [e["kind"] for e in timeline][-1] == "alert_repeated"
    # once resolved, the same alert opens a new incident
    url = f"{INCIDENTS}/{first.json()['id']}"
    assert (await admin.patch(url, json={"status": "resolved"})).status_code == 200
    third = await admin.post(INCIDENTS, json=body)
    assert third.status_code == 201 and third.json()["id"] != first.json()["id"]
    missing = seed_example(uid("sq"), source_type="backup", source_id=999_999)
    assert_error(await admin.post(INCIDENTS, json=missing), 404, "NOT_FOUND")


async def test_roles_authentication_and_teams(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    inc = (await admin.post(INCIDENTS, json=seed_example(uid("sq")))).json()
    url = f"{INCIDENTS}/{inc['id']}"
    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        assert (await c.get(url)).status_code == 200
        assert (await c.get(f"{url}/timeline")).status_code == 200
        assert_error(await c.post(INCIDENTS, json=seed_example("x")), 403, "FORBIDDEN")
        assert_error(await c.patch(url, json={"status": "investigating"}), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        for method, path in [("GET", INCIDENTS), ("POST", INCIDENTS), ("PATCH", url)]:
            assert_unauthorized(await anonymous.request(method, path, json={}))
        assert_unauthorized(await anonymous.get(f"{url}/timeline"))
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    outsider = await make_user("operator", team_ids=[team["id"]])
    async with outsider.client(api) as c:
        for method, path in [
            ("GET", url),
            ("PATCH", url),
            ("GET", f"{url}/timeline"),
            ("GET", f"{url}/evidence"),
        ]:
            assert_error(await c.request(method, path, json={}), 404, "NOT_FOUND")
        listed = (await c.get(INCIDENTS, params={"limit": 1000})).json()
        assert inc["id"] not in [i["id"] for i in listed["items"]]
        # their own incident lands in their team, unseen by the first team's viewer
        own = (await c.post(INCIDENTS, json=seed_example(uid("sq")))).json()
        assert own["team_id"] == team["id"]
    async with viewer.client(api) as c:
        assert_error(await c.get(f"{INCIDENTS}/{own['id']}"), 404, "NOT_FOUND")
    assert (await admin.get(url)).json()["status"] == "open"  # nothing changed


async def test_events_reach_the_right_channels_and_teams(
    api: Api, admin: httpx.AsyncClient
) -> None:
    squad = uid("sq")
    async with api.app.state.ctx.events.subscribe() as queue:
        inc = (await admin.post(INCIDENTS, json=seed_example(squad))).json()
        await admin.patch(f"{INCIDENTS}/{inc['id']}", json={"status": "investigating"})
        events = []
        while not queue.empty():
            event = queue.get_nowait()
            if event.type.startswith("incident."):
                events.append(event)
    assert [e.type for e in events] == ["incident.created", "incident.updated"]
    created = events[0]
    message = realtime.message(created)
    assert message["type"] == "incident" and message["action"] == "created"
    assert message["data"]["jira_id"] == inc["jira_id"]
    assert realtime.channels_of(created) == {
        "incidents",
        f"incident:{inc['id']}",
        "production",
        f"squad:{squad}",
    }
    assert events[1].data["status"] == "investigating"
    permissions = frozenset(BUILTIN_ROLES["operator"][1])
    member = Principal(2, "m", "operator", permissions, frozenset({created.team_id or 0}))
    stranger = Principal(3, "s", "operator", permissions, frozenset({987_654}))
    assert realtime.visible(created, member) and not realtime.visible(created, stranger)
