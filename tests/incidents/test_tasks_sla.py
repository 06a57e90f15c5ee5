"""Tasks at /api/v1/infra/tasks and the weekly SLA at /api/v1/infra/sla-metrics, against
a hand-computed fixture."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import httpx
from sqlalchemy import func, select

from opscenter.core.clock import utcnow
from opscenter.models import StorageProvider, Task
from tests.auth.test_auth import assert_unauthorized
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error, uid
from tests.incidents.test_incidents_api import INCIDENTS, seed_example

TASKS = "/api/v1/infra/tasks"
SLA = "/api/v1/infra/sla-metrics"
JSON = {"Content-Type": "application/json"}


async def task_count(api: Api) -> int:
    async with api.app.state.ctx.db.read_session() as s:
        return int(await s.scalar(select(func.count(Task.id))) or 0)


async def test_tasks_create_update_filter(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    squad = uid("sq")
    inc = (await admin.post(INCIDENTS, json=seed_example(squad))).json()
    worker = await make_user("operator")
    r = await admin.post(
        TASKS,
        json={
            "title": "Raise max_connections",
            "description": "and restart pgbouncer",
            "squad": squad,
            "incident_id": inc["id"],
            "assignee_id": worker.id,
            "estimated_hours": 2.5,
            "due_date": "2030-01-31",
        },
    )
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["status"] == "todo" and task["team_id"] == inc["team_id"]
    assert task["assignee"] == {"id": worker.id, "username": worker.username}
    assert task["due_date"] == "2030-01-31" and task["completed_at"] is None
    other = (await admin.post(TASKS, json={"title": "Write postmortem", "squad": squad})).json()

    async with worker.client(api) as c:
        r = await c.patch(f"{TASKS}/{task['id']}", json={"status": "done", "actual_hours": 3})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "done" and r.json()["completed_at"]
    for params, expected in [
        ({}, [other["id"], task["id"]]),
        ({"incident_id": inc["id"]}, [task["id"]]),
        ({"status": "done"}, [task["id"]]),
        ({"status": "todo"}, [other["id"]]),
        ({"assignee_id": worker.id}, [task["id"]]),
    ]:
        listed = (await admin.get(TASKS, params={"squad": squad, **params})).json()
        assert [t["id"] for t in listed["items"]] == expected, params
    reopened = (await admin.patch(f"{TASKS}/{task['id']}", json={"status": "in_progress"})).json()
    assert reopened["completed_at"] is None
    timeline = (await admin.get(f"{INCIDENTS}/{inc['id']}/timeline")).json()["items"]
    assert [e["new_value"] for e in timeline if e["kind"].startswith("task")] == [
        f"#{task['id']} Raise max_connections",
        f"#{task['id']} done",
        f"#{task['id']} in_progress",
    ]


async def test_task_bad_input_roles_and_teams(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    squad = uid("sq")
    before = await task_count(api)
    for bad in [
        {"title": "ab", "squad": squad},
        {"title": "Negative", "squad": squad, "estimated_hours": -1},
        {"title": "Bad status", "squad": squad, "status": "blocked"},
        {"title": "Bad date", "squad": squad, "due_date": "tomorrow"},
        {"title": "No squad"},
        {"title": "Smuggle", "squad": squad, "completed_at": "2020-01-01T00:00:00Z"},
        {"title": "Nobody", "squad": squad, "assignee_id": 999_999},
    ]:
        assert_error(await admin.post(TASKS, json=bad), 422, "VALIDATION_ERROR")
    r = await admin.post(TASKS, json={"title": "Lost", "squad": squad, "incident_id": 999_999})
    assert_error(r, 404, "NOT_FOUND")
    assert await task_count(api) == before
    task = (await admin.post(TASKS, json={"title": "Rotate keys", "squad": squad})).json()
    url = f"{TASKS}/{task['id']}"
    assert_error(await admin.patch(url, json={"status": None}), 422, "VALIDATION_ERROR")
    r = await admin.patch(url, content=b'{"actual_hours": Infinity}', headers=JSON)
    assert_error(r, 422, "VALIDATION_ERROR")
    assert_error(await admin.patch(f"{TASKS}/999999", json={}), 404, "NOT_FOUND")

    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        assert (await c.get(url)).status_code == 200
        assert (await c.get(SLA)).status_code == 200
        assert_error(await c.post(TASKS, json={"title": "Nope", "squad": squad}), 403, "FORBIDDEN")
        assert_error(await c.patch(url, json={"status": "done"}), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        for method, path in [("GET", TASKS), ("POST", TASKS), ("PATCH", url), ("GET", SLA)]:
            assert_unauthorized(await anonymous.request(method, path, json={}))
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    outsider = await make_user("operator", team_ids=[team["id"]])
    async with outsider.client(api) as c:
        assert_error(await c.get(url), 404, "NOT_FOUND")
        assert_error(await c.patch(url, json={"status": "done"}), 404, "NOT_FOUND")
        assert task["id"] not in [t["id"] for t in (await c.get(TASKS)).json()["items"]]
        weeks = (await c.get(SLA, params={"weeks": 1, "squad": squad})).json()["items"]
        assert weeks[0]["total_requested_hours"] == 0  # another team's hours are not theirs
    assert (await admin.get(url)).json()["status"] == "todo"


async def test_sla_against_a_hand_computed_fixture(api: Api, admin: httpx.AsyncClient) -> None:
    squad = uid("sq")
    now = utcnow()
    monday = datetime.combine(now.date() - timedelta(days=now.weekday()), time.min, now.tzinfo)
    async with api.app.state.ctx.db.write_session() as s:
        team_id = (await s.scalars(select(StorageProvider.team_id))).first()
        rows = [
            # this week: 10 h done in 8, 5 h in progress (requested, not delivered)
            (monday, squad, "done", 10.0, 8.0),
            (min(now, monday + timedelta(hours=1)), squad, "in_progress", 5.0, 3.0),
            # last week: nothing
            # two weeks ago: 8 h done in 6, 2 h done without hours booked
            (monday - timedelta(days=14), squad, "done", 8.0, 6.0),
            (monday - timedelta(days=8), squad, "done", 2.0, None),
            # three weeks ago: outside a 3-week window
            (monday - timedelta(days=15), squad, "done", 100.0, 100.0),
            # this week, another squad
            (monday, uid("other"), "done", 50.0, 1.0),
        ]
        s.add_all(
            Task(
                team_id=team_id,
                title="fixture",
                squad=sq,
                status=status,
                estimated_hours=est,
                actual_hours=act,
                created_at=at,
            )
            for at, sq, status, est, act in rows
        )
        await s.commit()
    r = await admin.get(SLA, params={"weeks": 3, "squad": squad})
    assert r.status_code == 200, r.text
    body = r.json()
    weeks = [
        (
            w["week_start"],
            w["week_end"],
            w["total_requested_hours"],
            w["total_delivered_hours"],
            w["sla_percentage"],
            w["tasks"],
            w["squad"],
        )
        for w in body["items"]
    ]
    day = monday.date()
    assert weeks == [
        (str(day), str(day + timedelta(days=6)), 15.0, 8.0, 53.33, 2, squad),
        (str(day - timedelta(days=7)), str(day - timedelta(days=1)), 0.0, 0.0, 100.0, 0, squad),
        (str(day - timedelta(days=14)), str(day - timedelta(days=8)), 10.0, 6.0, 60.0, 2, squad),
    ]
    assert body["total"] == 3 and body["items"][0]["id"] == f"sla-{day}"
    # forecast: the line through (0, 60) and (2, 53.33), from x = 3 on
    slope = (53.33 - 60.0) / 2
    expected = [round(60.0 + slope * x, 2) for x in (3, 4, 5, 6)]
    got = [f["sla_percentage"] for f in body["forecast"]]
    assert all(abs(a - b) <= 0.01 for a, b in zip(got, expected, strict=True)), got
    assert body["forecast"][0]["week_start"] == str(day + timedelta(days=7))
    assert "least-squares" in body["forecast_method"]

    # a squad with nothing: 100 % everywhere, a flat forecast
    empty = (await admin.get(SLA, params={"weeks": 52, "squad": uid("none")})).json()
    assert len(empty["items"]) == 52
    assert {w["sla_percentage"] for w in empty["items"]} == {100.0}
    assert {f["sla_percentage"] for f in empty["forecast"]} == {100.0}
    for bad in [{"weeks": 0}, {"weeks": 53}, {"squad": "a b"}]:
        assert_error(await admin.get(SLA, params=bad), 422, "VALIDATION_ERROR")
