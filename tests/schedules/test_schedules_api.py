"""Schedules through the API: CRUD with cron + timezone and with seed 000's fields,
validation, roles, team scoping, manual runs of real backups, idempotency, and seed 002's
`/backup/policies` view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import update

from opscenter.core import cron
from opscenter.models import ScheduleRun
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.schedules.helpers import make_schedule, make_server, uid, wait_job


def parse(ts: str) -> datetime:
    assert ts.endswith("Z")
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def audit_actions(client: httpx.AsyncClient, resource_id: int) -> list[str]:
    r = await client.get(
        "/api/v1/audit/logs", params={"resource_type": "schedule", "resource_id": resource_id}
    )
    assert r.status_code == 200, r.text
    return [i["action"] for i in r.json()["items"]]


async def test_crud_with_cron_and_timezone(api: Api, admin: httpx.AsyncClient) -> None:
    server = await make_server(admin)
    before = datetime.now(UTC)
    s = await make_schedule(
        admin,
        server["id"],
        cron_expression="  30   2 * * * ",
        timezone="Europe/Berlin",
        description="nightly",
        notify_on_success=True,
    )
    assert s["cron_expression"] == "30 2 * * *" and s["timezone"] == "Europe/Berlin"
    assert (s["schedule_type"], s["schedule_time"]) == ("daily", "02:30")
    assert s["enabled"] is s["is_active"] is True and s["last_run"] is None
    assert s["storage_ids"] == [] and s["priority"] == 5 and s["misfire_policy"] == "run_once"
    next_run = parse(s["next_run"])
    assert next_run == cron.next_after("30 2 * * *", ZoneInfo("Europe/Berlin"), before)
    assert next_run.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") in ("02:30", "03:00")

    assert (await admin.get(f"/api/v1/schedules/{s['id']}")).json() == s
    listed = (await admin.get("/api/v1/schedules", params={"q": s["name"]})).json()
    assert [i["id"] for i in listed["items"]] == [s["id"]]
    listed = (await admin.get("/api/v1/schedules", params={"server_id": server["id"]})).json()
    assert [i["id"] for i in listed["items"]] == [s["id"]]

    r = await admin.put(f"/api/v1/schedules/{s['id']}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["next_run"] is None and r.json()["is_active"] is False
    r = await admin.put(f"/api/v1/schedules/{s['id']}", json={"is_active": True})
    assert r.status_code == 200 and r.json()["enabled"] is True and r.json()["next_run"]
    r = await admin.put(f"/api/v1/schedules/{s['id']}", json={"schedule_time": "04:15"})
    assert r.json()["cron_expression"] == "15 4 * * *"
    r = await admin.put(f"/api/v1/schedules/{s['id']}", json={"day_of_week": 2})
    assert_error(r, 422, "VALIDATION_ERROR")  # a daily schedule has no day of the week
    r = await admin.put(
        f"/api/v1/schedules/{s['id']}",
        json={"schedule_type": "weekly", "day_of_week": 3, "timezone": "America/New_York"},
    )
    body = r.json()
    assert body["cron_expression"] == "15 4 * * 3" and body["schedule_type"] == "weekly"
    local = parse(body["next_run"]).astimezone(ZoneInfo("America/New_York"))
    assert (local.strftime("%H:%M"), local.isoweekday()) == ("04:15", 3)
    r = await admin.put(f"/api/v1/schedules/{s['id']}", json={"cron_expression": "*/20 * * * *"})
    assert (r.json()["schedule_type"], r.json()["schedule_time"]) == ("custom", None)
    r = await admin.put(f"/api/v1/schedules/{s['id']}", json={"schedule_time": "01:00"})
    assert_error(r, 422, "VALIDATION_ERROR")  # a custom cron has no time to change
    assert "custom cron" in r.json()["detail"]

    assert (await admin.delete(f"/api/v1/schedules/{s['id']}")).status_code == 204
    assert_error(await admin.get(f"/api/v1/schedules/{s['id']}"), 404, "NOT_FOUND")
    # five updates succeeded; the refused one left no trace
    assert await audit_actions(admin, s["id"]) == [
        "schedule.delete",
        *["schedule.update"] * 5,
        "schedule.create",
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"schedule_type": "daily", "schedule_time": "03:00"}, ("0 3 * * *", "daily", None, None)),
        (
            {"schedule_type": "weekly", "schedule_time": "22:45", "day_of_week": 6},
            ("45 22 * * 6", "weekly", 6, None),
        ),
        (
            {"schedule_type": "monthly", "schedule_time": "00:30", "day_of_month": 28},
            ("30 0 28 * *", "monthly", None, 28),
        ),
    ],
)
async def test_seed000_backup_job_fields(
    api: Api,
    admin: httpx.AsyncClient,
    tmp_path: Path,
    fields: dict[str, Any],
    expected: tuple[str, str, int | None, int | None],
) -> None:
    host = await make_server(admin, type="local", host=None, port=None, paths=[str(tmp_path)])
    r = await admin.post(
        "/api/v1/schedules",
        json={
            "name": uid("Database Backup "),
            "server_id": host["id"],
            "source_path": str(tmp_path / "data"),
            "backup_type": "full",
            "retention_days": 30,
            "priority": 8,
            "is_active": True,
            **fields,
        },
    )
    assert r.status_code == 201, r.text
    s = r.json()
    assert (s["cron_expression"], s["schedule_type"], s["day_of_week"], s["day_of_month"]) == (
        expected
    )
    assert s["schedule_time"] == fields["schedule_time"] and s["timezone"] == "UTC"
    assert (s["source_path"], s["database_name"]) == (str(tmp_path / "data"), None)
    assert (s["retention_days"], s["priority"], s["enabled"]) == (30, 8, True)


async def test_seed000_job_without_server_backs_up_this_host(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "table.dat").write_bytes(b"rows" * 1000)
    seed_body = {  # seed 000's example as written, but a path of this test
        "name": uid("Database Backup "),
        "source_path": str(tmp_path / "data"),
        "backup_type": "full",
        "schedule_type": "daily",
        "schedule_time": "03:00",
        "retention_days": 30,
        "priority": 8,
    }
    operator = await make_user("operator")  # of the default team, like the first users
    async with operator.client(api) as client:
        # This host's files are an admin's to open: it starts with no paths.
        r = await client.post("/api/v1/schedules", json=seed_body)
        assert_error(r, 403, "FORBIDDEN")
        assert "an admin adds it" in r.json()["detail"]

    r = await admin.post("/api/v1/schedules", json=seed_body)  # an admin's job opens the path
    assert r.status_code == 201, r.text
    host = (await admin.get(f"/api/v1/servers/{r.json()['server_id']}")).json()
    assert (host["name"], host["type"]) == ("this host", "local")
    assert host["paths"] == [str(tmp_path / "data")]

    async with operator.client(api) as client:
        r = await client.post("/api/v1/schedules", json={**seed_body, "name": uid("op ")})
        assert r.status_code == 201, r.text
        schedule = r.json()
        assert schedule["server_id"] == host["id"]
        run = await client.post(f"/api/v1/schedules/{schedule['id']}/run", json={})
        assert run.status_code == 202, run.text
        job = await wait_job(api, client, run.json()["job_id"])
        assert job["status"] == "succeeded", job

    # The path is checked for everyone: absolute, no '..', never opscenter's keys or
    # metadata database nor a directory holding them.
    keys = api.settings.keys_dir.resolve()
    for path in ("relative/dir", "/srv/../etc", str(keys), str(keys / "x"), "/"):
        r = await admin.post(
            "/api/v1/schedules", json={**seed_body, "name": uid("bad "), "source_path": path}
        )
        assert_error(r, 422, "VALIDATION_ERROR")
    host_after = (await admin.get(f"/api/v1/servers/{host['id']}")).json()
    assert host_after["paths"] == [str(tmp_path / "data")]
    r = await admin.post(
        "/api/v1/schedules",
        json={**seed_body, "source_path": None, "database_name": "app", "name": uid("x ")},
    )
    assert_error(r, 422, "VALIDATION_ERROR")


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"cron_expression": "61 * * * *"}, "Bad minute"),
    ({"cron_expression": "0 0 * * * *"}, "5 fields"),
    ({"cron_expression": "0 0 31 2 *"}, "Bad day-of-month"),
    ({"cron_expression": "@daily"}, "5 fields"),
    ({"timezone": "Mars/Olympus_Mons"}, "unknown timezone"),
    ({"timezone": "localtime"}, "unknown timezone"),
    ({"cron_expression": None, "schedule_type": "daily"}, "schedule_time"),
    ({"schedule_type": "daily", "schedule_time": "03:00"}, "not both"),
    ({"cron_expression": None, "schedule_type": "hourly", "schedule_time": "03:00"}, "daily"),
    ({"cron_expression": None, "schedule_type": "daily", "schedule_time": "24:00"}, "pattern"),
    (
        {
            "cron_expression": None,
            "schedule_type": "daily",
            "schedule_time": "03:00",
            "day_of_week": 1,
        },
        "weekly",
    ),
    ({"priority": 11}, "less than or equal"),
    ({"enabled": True, "is_active": False}, "disagree"),
    ({"source_path": "/var/lib"}, "database_name, or source_path"),
    ({"database_name": None}, "database_name, or source_path"),
    ({"storage_ids": []}, "at least 1"),
    ({"retention_days": 7, "retention_policy_id": 1}, "not both"),
    ({"last_run": "2024-01-01T00:00:00Z"}, "Extra inputs"),
    ({"backup_type": "incremental"}, "pattern"),
    ({"description": "nul\x00byte"}, "control characters"),
    ({"misfire_policy": "run_all"}, "run_once"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_BODIES)
async def test_bad_input_is_refused_and_nothing_written(
    api: Api, admin: httpx.AsyncClient, fields: dict[str, Any], message: str
) -> None:
    server = await make_server(admin)
    name = uid("bad-")
    body = {
        "name": name,
        "server_id": server["id"],
        "database_name": "db",
        "cron_expression": "0 3 * * *",
        **fields,
    }
    body = {k: v for k, v in body.items() if v is not None}
    for path in ("/api/v1/schedules", "/api/v1/backup/policies"):
        r = await admin.post(path, json=body)
        error = assert_error(r, 422, "VALIDATION_ERROR")
        assert message in str(error["detail"]), error
    assert (await admin.get("/api/v1/schedules", params={"q": name})).json()["total"] == 0


async def test_references_and_conflicts(api: Api, admin: httpx.AsyncClient) -> None:
    server = await make_server(admin)
    name = uid("ref-")
    base = {"name": name, "server_id": server["id"], "database_name": "db"}
    base["cron_expression"] = "0 3 * * *"
    for extra, status, code in [
        ({"server_id": 2_000_000_000}, 404, "NOT_FOUND"),
        ({"retention_policy_id": 2_000_000_000}, 404, "NOT_FOUND"),
        ({"storage_ids": [2_000_000_000]}, 404, "NOT_FOUND"),
        ({"storage_ids": [1, 1]}, 422, "VALIDATION_ERROR"),
        ({"server_id": 0}, 422, "VALIDATION_ERROR"),
    ]:
        assert_error(await admin.post("/api/v1/schedules", json={**base, **extra}), status, code)
    assert (await admin.get("/api/v1/schedules", params={"q": name})).json()["total"] == 0
    s = await make_schedule(admin, server["id"], name=name)
    assert_error(await admin.post("/api/v1/schedules", json=base), 409, "CONFLICT")
    other = await make_schedule(admin, server["id"])
    r = await admin.put(f"/api/v1/schedules/{other['id']}", json={"name": name.upper()})
    assert_error(r, 409, "CONFLICT")
    for body in (
        {"cron_expression": "99 * * * *"},
        {"timezone": "Nowhere/Special"},
        {"name": None},
        {"enabled": None},
        {"database_name": "a", "source_path": "/b"},
        {"source_path": "/var/lib/postgresql"},  # a postgresql server backs up databases
        {"unknown": 1},
    ):
        r = await admin.put(f"/api/v1/schedules/{s['id']}", json=body)
        assert_error(r, 422, "VALIDATION_ERROR")
    assert (await admin.get(f"/api/v1/schedules/{s['id']}")).json() == s
    for body in ({"backup_type": "incremental"}, {"notify": "loud"}, {"extra": 1}, [1]):
        r = await admin.post(f"/api/v1/schedules/{s['id']}/run", json=body)
        assert_error(r, 422, "VALIDATION_ERROR")
    assert (await admin.get(f"/api/v1/schedules/{s['id']}/runs")).json()["total"] == 0
    for method, path in [
        ("GET", ""),
        ("PUT", ""),
        ("DELETE", ""),
        ("POST", "/run"),
        ("GET", "/executions"),
        ("GET", "/runs"),
    ]:
        kwargs: dict[str, Any] = {"json": {}} if method in ("PUT", "POST") else {}
        r = await admin.request(method, f"/api/v1/schedules/2000000000{path}", **kwargs)
        assert_error(r, 404, "NOT_FOUND")
        r = await admin.request(method, f"/api/v1/schedules/0{path}", **kwargs)
        assert_error(r, 422, "VALIDATION_ERROR")


async def test_roles_authentication_and_teams(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    server = await make_server(admin)
    s = await make_schedule(admin, server["id"])
    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        assert (await c.get("/api/v1/schedules")).status_code == 200
        assert (await c.get(f"/api/v1/schedules/{s['id']}/executions")).status_code == 200
        for method, path, body in [
            ("POST", "/api/v1/schedules", {"name": uid(), "server_id": server["id"]}),
            ("PUT", f"/api/v1/schedules/{s['id']}", {"enabled": False}),
            ("DELETE", f"/api/v1/schedules/{s['id']}", None),
            ("POST", f"/api/v1/schedules/{s['id']}/run", {}),
            ("POST", "/api/v1/backup/policies", {"name": uid()}),
            ("POST", f"/api/v1/backup/policies/{s['id']}/execute", {}),
        ]:
            r = await c.request(method, path, json=body)
            assert_error(r, 403, "FORBIDDEN")
    async with api.client() as anonymous:
        for method, path in [
            ("GET", "/api/v1/schedules"),
            ("POST", "/api/v1/schedules"),
            ("POST", f"/api/v1/schedules/{s['id']}/run"),
            ("GET", "/api/v1/backup/policies"),
        ]:
            assert_error(await anonymous.request(method, path, json={}), 401, "UNAUTHORIZED")
    assert (await admin.get(f"/api/v1/schedules/{s['id']}")).json() == s  # nothing changed
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    outsider = await make_user("operator", team_ids=[team["id"]])
    async with outsider.client(api) as c:
        for method, path in [("GET", ""), ("PUT", ""), ("DELETE", ""), ("POST", "/run")]:
            r = await c.request(method, f"/api/v1/schedules/{s['id']}{path}", json={})
            assert_error(r, 404, "NOT_FOUND")
        listed = (await c.get("/api/v1/schedules", params={"limit": 1000})).json()
        assert s["id"] not in [i["id"] for i in listed["items"]]
        # nor can they schedule the default team's server
        r = await c.post(
            "/api/v1/schedules",
            json={
                "name": uid(),
                "server_id": server["id"],
                "database_name": "x",
                "cron_expression": "0 1 * * *",
            },
        )
        assert_error(r, 404, "NOT_FOUND")
    operator = await make_user("operator")
    async with operator.client(api) as c:
        r = await c.put(f"/api/v1/schedules/{s['id']}", json={"priority": 9})
        assert r.status_code == 200 and r.json()["priority"] == 9


async def test_manual_run_is_a_real_backup_with_idempotency(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    s = await make_schedule(admin, server["id"], database_name=source_db)
    key = {"Idempotency-Key": uid("key-")}
    first = await admin.post(f"/api/v1/schedules/{s['id']}/run", json={"notify": True}, headers=key)
    assert first.status_code == 202, first.text
    accepted = first.json()
    assert accepted["status_url"] == f"/api/v1/jobs/{accepted['job_id']}"
    # a retry with the same key is the same run, not a second backup
    again = await admin.post(f"/api/v1/schedules/{s['id']}/run", json={"notify": True}, headers=key)
    assert again.status_code == 202
    assert (again.json()["id"], again.json()["job_id"]) == (accepted["id"], accepted["job_id"])
    r = await admin.post(f"/api/v1/schedules/{s['id']}/run", json={"notify": False}, headers=key)
    assert_error(r, 409, "CONFLICT")
    job = await wait_job(api, admin, accepted["job_id"])
    assert job["status"] == "succeeded", job
    # the same key still answers with that run, now completed
    done = await admin.post(f"/api/v1/schedules/{s['id']}/run", json={"notify": True}, headers=key)
    assert done.status_code == 202 and done.json()["id"] == accepted["id"]
    assert done.json()["status"] == "completed"

    # seed 002's execute runs it too (no key: a new run)
    second = await admin.post(f"/api/v1/backup/policies/{s['id']}/execute")
    assert second.status_code == 202, second.text
    assert (await wait_job(api, admin, second.json()["job_id"]))["status"] == "succeeded"

    executions = (await admin.get(f"/api/v1/schedules/{s['id']}/executions")).json()
    assert [b["id"] for b in executions["items"]] == [second.json()["id"], accepted["id"]]
    newest = executions["items"][0]
    assert newest["status"] == "completed" and newest["schedule_id"] == s["id"]
    assert newest["database_name"] == source_db and newest["checksum"].startswith("sha256:")
    assert newest["row_counts"].get("public.items", newest["row_counts"].get("items")) == 50
    runs = (await admin.get(f"/api/v1/schedules/{s['id']}/runs")).json()["items"]
    # a run record follows its backup to the end
    assert [(r["trigger"], r["status"], r["backup_id"]) for r in runs] == [
        ("manual", "completed", second.json()["id"]),
        ("manual", "completed", accepted["id"]),
    ]
    state = (await admin.get(f"/api/v1/schedules/{s['id']}")).json()
    assert state["last_run"] is not None
    assert (await audit_actions(admin, s["id"])).count("schedule.run") == 2
    r = await admin.post(f"/api/v1/schedules/{s['id']}/run", headers={"Idempotency-Key": "bad key"})
    assert_error(r, 422, "VALIDATION_ERROR")

    # 24 hours later the key is free again: a new run
    async with api.app.state.ctx.db.write_session() as session:
        await session.execute(
            update(ScheduleRun)
            .where(ScheduleRun.idempotency_key == key["Idempotency-Key"])
            .values(created_at=datetime.now(UTC) - timedelta(hours=24, seconds=1))
        )
        await session.commit()
    later = await admin.post(f"/api/v1/schedules/{s['id']}/run", json={"notify": True}, headers=key)
    assert later.status_code == 202, later.text
    assert later.json()["id"] not in (accepted["id"], second.json()["id"])
    assert (await wait_job(api, admin, later.json()["job_id"]))["status"] == "succeeded"


async def test_backup_policies_are_schedules(api: Api, admin: httpx.AsyncClient) -> None:
    server = await make_server(admin)
    r = await admin.post(
        "/api/v1/backup/policies",
        json={
            "name": uid("policy-"),
            "server_id": server["id"],
            "database_name": "sales",
            "schedule_type": "daily",
            "schedule_time": "01:00",
        },
    )
    assert r.status_code == 201, r.text
    policy = r.json()
    assert (await admin.get(f"/api/v1/schedules/{policy['id']}")).json() == policy
    r = await admin.put(f"/api/v1/backup/policies/{policy['id']}", json={"priority": 2})
    assert r.status_code == 200 and r.json()["priority"] == 2
    listed = (await admin.get("/api/v1/backup/policies", params={"limit": 1000})).json()
    assert policy["id"] in [p["id"] for p in listed["items"]]
    assert (await admin.get(f"/api/v1/backup/policies/{policy['id']}")).json()["priority"] == 2
    assert_error(
        await admin.put("/api/v1/backup/policies/2000000000", json={"priority": 2}),
        404,
        "NOT_FOUND",
    )


async def test_removing_the_server_removes_its_schedules(
    api: Api, admin: httpx.AsyncClient
) -> None:
    server = await make_server(admin)
    s = await make_schedule(admin, server["id"])
    assert (await admin.delete(f"/api/v1/servers/{server['id']}")).status_code == 204
    assert_error(await admin.get(f"/api/v1/schedules/{s['id']}"), 404, "NOT_FOUND")
