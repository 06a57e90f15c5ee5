"""External job reports: the legacy `POST /api/backup/status` with an API key, the
`/api/v1/external-jobs` management routes, bad input everywhere, and the dead man's
switch (overdue once per period, recovered by a report) with an injected clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from opscenter.core.events import Event
from opscenter.external_jobs.watch import check_overdue, run_forever
from opscenter.models import ExternalJob
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.schedules.helpers import uid

LEGACY = "/api/backup/status"
JOBS = "/api/v1/external-jobs"


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def api_key(admin: httpx.AsyncClient, role: str) -> str:
    r = await admin.post("/api/v1/admin/tokens", json={"name": uid("key-"), "role": role})
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


@pytest.fixture
async def reporter(api: Api, admin: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A backup script: an operator-role API key and nothing else."""
    async with api.client({"X-API-Key": await api_key(admin, "operator")}) as client:
        yield client


def report(name: str, **fields: Any) -> dict[str, Any]:
    return {"job_name": name, "status": "success", **fields}


async def jobs_named(admin: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await admin.get(JOBS, params={"q": name})).json()["items"]
    return [j for j in items if j["name"] == name]


async def test_legacy_path_with_an_api_key_builds_a_history(
    api: Api, admin: httpx.AsyncClient
) -> None:
    key = await api_key(admin, "operator")
    name = uid("nightly-sql-")
    started = datetime.now(UTC) - timedelta(minutes=30)
    async with api.client({"X-API-Key": key}) as script:
        r = await script.post(
            LEGACY,
            json={
                "job_name": name,
                "status": "Completed",  # PowerShell scripts say it like this
                "started_at": started.isoformat(),
                "completed_at": (started + timedelta(minutes=12)).isoformat(),
                "size_bytes": 123_456_789,
                "message": "Full backup of SALES\nverified with RESTORE VERIFYONLY",
                "host": "sql01.corp.example",
            },
        )
        assert r.status_code == 201, r.text
        first = r.json()
        r = await script.post(
            LEGACY, json=report(name, status="FAILED", host="sql01.corp.example", message="disk")
        )
        assert r.status_code == 201, r.text
        second = r.json()
        # the same name from another host is another job
        other = (await script.post(LEGACY, json=report(name, host="sql02"))).json()
    assert key not in json.dumps([first, second, other])

    job = first["job"]
    assert first["created_job"] is True and second["created_job"] is False
    assert second["job"]["id"] == job["id"] != other["job"]["id"]
    assert (job["name"], job["host"]) == (name, "sql01.corp.example")
    assert (job["expected_interval_minutes"], job["grace_minutes"]) == (1440, 60)
    assert first["report"]["status"] == "success"
    assert first["report"]["duration_seconds"] == 12 * 60
    assert parse(job["last_success_at"]) == started  # the point in time the backup began
    assert job["last_size_bytes"] == 123_456_789 and job["overdue"] is False
    assert parse(job["next_report_due_at"]) == parse(job["last_report_at"]) + timedelta(hours=25)

    detail = (await admin.get(f"{JOBS}/{job['id']}")).json()
    assert [r["status"] for r in detail["recent_reports"]] == ["failed", "success"]
    assert detail["recent_reports"][0]["message"] == "disk"
    assert detail["last_status"] == "failed"
    # a failure does not move the last good backup or its size
    assert detail["last_success_at"] == job["last_success_at"]
    assert detail["last_size_bytes"] == 123_456_789
    reports = (await admin.get(f"{JOBS}/{job['id']}/reports", params={"limit": 1})).json()
    assert reports["total"] == 2 and reports["items"][0]["id"] == second["report"]["id"]
    assert {j["host"] for j in await jobs_named(admin, name)} == {"sql01.corp.example", "sql02"}

    # the versioned twin of the legacy path adds to the same history
    async with api.client({"X-API-Key": key}) as script:
        r = await script.post(f"{JOBS}/reports", json=report(name, host="sql01.corp.example"))
    assert r.status_code == 201 and r.json()["job"]["id"] == job["id"]

    audit = (await admin.get("/api/v1/audit/logs", params={"action": "external_job.report"})).json()
    audited = [e for e in audit["items"] if str(e["resource_id"]) == str(job["id"])]
    assert len(audited) == 3 and key not in json.dumps(audited)


async def test_reports_need_a_valid_key_with_write_backups(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    name = uid("denied-")
    viewer_key = await api_key(admin, "viewer")
    revoked = (await admin.post("/api/v1/admin/tokens", json={"name": uid("k-")})).json()
    assert (await admin.delete(f"/api/v1/admin/tokens/{revoked['id']}")).status_code == 204
    for path in (LEGACY, f"{JOBS}/reports"):
        async with api.client() as anonymous:
            assert_error(await anonymous.post(path, json=report(name)), 401, "UNAUTHORIZED")
        for bad in ("ock_not-a-real-key-0000000000", revoked["key"]):
            async with api.client({"X-API-Key": bad}) as c:
                assert_error(await c.post(path, json=report(name)), 401, "UNAUTHORIZED")
        async with api.client({"X-API-Key": viewer_key}) as c:
            body = assert_error(await c.post(path, json=report(name)), 403, "FORBIDDEN")
            assert "write:backups" in body["detail"]
    assert await jobs_named(admin, name) == []


@pytest.mark.parametrize(
    "body",
    [
        {"status": "success"},
        {"job_name": "", "status": "success"},
        {"job_name": "x" * 201, "status": "success"},
        {"job_name": "nightly", "status": "maybe"},
        {"job_name": "nightly"},
        {"job_name": "nightly", "status": "success", "size_bytes": -1},
        {"job_name": "nightly", "status": "success", "size_bytes": "big"},
        {"job_name": "nightly", "status": "success", "duration_seconds": -5},
        {"job_name": "nightly", "status": "success", "started_at": "yesterday"},
        {
            "job_name": "nightly",
            "status": "success",
            "started_at": "2026-01-02T10:00:00Z",
            "completed_at": "2026-01-02T09:00:00Z",
        },
        {"job_name": "nightly", "status": "success", "started_at": "2999-01-01T00:00:00Z"},
        {"job_name": "nightly", "status": "success", "message": "bad\x00byte"},
        {"job_name": "nightly", "status": "success", "message": "m" * 4001},
        {"job_name": "nightly", "status": "success", "host": "h" * 256},
        {"job_name": "nightly", "status": "success", "team_id": 1},
    ],
)
async def test_bad_reports_are_refused_and_nothing_written(
    api: Api, admin: httpx.AsyncClient, reporter: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    name = uid("bad-")
    if body.get("job_name") == "nightly":
        body = {**body, "job_name": name}
    before = (await admin.get(JOBS)).json()["total"]
    assert_error(await reporter.post(LEGACY, json=body), 422, "VALIDATION_ERROR")
    assert (await admin.get(JOBS)).json()["total"] == before


async def test_malformed_json_and_nan_are_refused(
    api: Api, admin: httpx.AsyncClient, reporter: httpx.AsyncClient
) -> None:
    name = uid("nan-")
    headers = {"content-type": "application/json"}
    for raw in (
        '{"job_name": "' + name + '", "status": "success", "duration_seconds": NaN}',
        '{"job_name": "' + name + '", "status": ',
    ):
        r = await reporter.post(LEGACY, content=raw, headers=headers)
        assert_error(r, 422, "VALIDATION_ERROR")
    assert await jobs_named(admin, name) == []


async def test_manage_jobs(api: Api, admin: httpx.AsyncClient, make_user: UserFactory) -> None:
    name = uid("registered-")
    r = await admin.post(JOBS, json={"name": name, "host": "nas", "expected_interval_minutes": 60})
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["grace_minutes"], job["enabled"], job["last_report_at"]) == (60, True, None)
    assert parse(job["next_report_due_at"]) == parse(job["created_at"]) + timedelta(hours=2)
    assert_error(await admin.post(JOBS, json={"name": name, "host": "nas"}), 409, "CONFLICT")
    for bad in (
        {"name": uid(), "expected_interval_minutes": 0},
        {"name": uid(), "grace_minutes": -1},
        {"name": uid(), "expected_interval_minutes": 10**9},
        {"name": uid(), "enabled": "perhaps"},
        {"name": uid(), "team_id": 0},
        {"name": uid(), "overdue_since": "2020-01-01T00:00:00Z"},
        {"host": "nas"},
    ):
        assert_error(await admin.post(JOBS, json=bad), 422, "VALIDATION_ERROR")
    assert_error(await admin.post(JOBS, json={"name": uid(), "team_id": 999999}), 404, "NOT_FOUND")

    r = await admin.put(f"{JOBS}/{job['id']}", json={"grace_minutes": 5, "enabled": False})
    assert r.status_code == 200, r.text
    assert (r.json()["grace_minutes"], r.json()["enabled"]) == (5, False)
    assert r.json()["expected_interval_minutes"] == 60
    bad_updates: list[dict[str, Any]] = [
        {},
        {"grace_minutes": None},
        {"expected_interval_minutes": 0},
        {"name": "x"},
    ]
    for bad_update in bad_updates:
        r = await admin.put(f"{JOBS}/{job['id']}", json=bad_update)
        assert_error(r, 422, "VALIDATION_ERROR")
    unchanged = (await admin.get(f"{JOBS}/{job['id']}")).json()
    assert (unchanged["grace_minutes"], unchanged["enabled"]) == (5, False)
    listed = (await admin.get(JOBS, params={"enabled": False, "q": name})).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]

    missing = 2**31 - 1
    for method, path in (
        ("GET", f"{JOBS}/{missing}"),
        ("GET", f"{JOBS}/{missing}/reports"),
        ("PUT", f"{JOBS}/{missing}"),
        ("DELETE", f"{JOBS}/{missing}"),
    ):
        assert_error(await admin.request(method, path, json={"enabled": True}), 404, "NOT_FOUND")
    assert_error(await admin.get(f"{JOBS}/0"), 422, "VALIDATION_ERROR")
    assert_error(await admin.get(f"{JOBS}/{2**31}"), 422, "VALIDATION_ERROR")

    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        assert (await c.get(f"{JOBS}/{job['id']}")).status_code == 200
        assert_error(await c.post(JOBS, json={"name": uid()}), 403, "FORBIDDEN")
        assert_error(await c.put(f"{JOBS}/{job['id']}", json={"enabled": True}), 403, "FORBIDDEN")
        assert_error(await c.delete(f"{JOBS}/{job['id']}"), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        for method in ("GET", "PUT", "DELETE"):
            r = await anonymous.request(method, f"{JOBS}/{job['id']}", json={"enabled": True})
            assert_error(r, 401, "UNAUTHORIZED")
        assert_error(await anonymous.get(JOBS), 401, "UNAUTHORIZED")

    # delete takes the history along; a later report starts afresh
    async with api.client({"X-API-Key": await api_key(admin, "operator")}) as script:
        assert (await script.post(LEGACY, json=report(name, host="nas"))).status_code == 201
    assert (await admin.delete(f"{JOBS}/{job['id']}")).status_code == 204
    assert_error(await admin.get(f"{JOBS}/{job['id']}"), 404, "NOT_FOUND")
    assert_error(await admin.get(f"{JOBS}/{job['id']}/reports"), 404, "NOT_FOUND")
    assert await jobs_named(admin, name) == []


async def test_other_teams_jobs_do_not_exist(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    outsider = await make_user("operator", team_ids=[team["id"]])
    name = uid("private-")
    job = (await admin.post(JOBS, json={"name": name})).json()
    async with outsider.client(api) as c:
        assert_error(await c.get(f"{JOBS}/{job['id']}"), 404, "NOT_FOUND")
        assert_error(await c.put(f"{JOBS}/{job['id']}", json={"enabled": False}), 404, "NOT_FOUND")
        assert job["id"] not in [j["id"] for j in (await c.get(JOBS)).json()["items"]]
        # a report of the same name from that team is that team's own job
        r = await c.post(LEGACY, json=report(name))
        assert r.status_code == 201 and r.json()["created_job"] is True
        assert r.json()["job"]["team_id"] == team["id"] != job["team_id"]


def mine(events: list[Event], job_id: int) -> list[Event]:
    return [e for e in events if e.data.get("external_job_id") == job_id]


async def test_overdue_is_raised_once_per_period_and_recovers(
    api: Api, admin: httpx.AsyncClient, reporter: httpx.AsyncClient
) -> None:
    ctx = api.app.state.ctx
    name = uid("deadman-")
    r = await reporter.post(LEGACY, json=report(name, host="db7"))
    job = r.json()["job"]
    last = parse(job["last_report_at"])
    due = last + timedelta(minutes=1440 + 60)

    assert mine(await check_overdue(ctx, now=due), job["id"]) == []
    async with ctx.events.subscribe() as queue:
        raised = mine(await check_overdue(ctx, now=due + timedelta(seconds=1)), job["id"])
        assert len(raised) == 1
        published = []
        while not queue.empty():
            published.append(queue.get_nowait())
    event = raised[0]
    assert event in mine(published, job["id"])
    assert event.type == "external_job.overdue" and event.team_id == job["team_id"]
    assert event.data == {
        "external_job_id": job["id"],
        "job_name": name,
        "host": "db7",
        "last_report_at": job["last_report_at"],
        "expected_interval_minutes": 1440,
        "severity": "warning",
        "message": event.data["message"],
    }
    assert name in event.data["message"] and "db7" in event.data["message"]
    # once per period, not every tick
    for later in (timedelta(minutes=1), timedelta(days=3)):
        assert mine(await check_overdue(ctx, now=due + later), job["id"]) == []
    shown = (await admin.get(f"{JOBS}/{job['id']}")).json()
    assert shown["overdue_since"] is not None

    async with ctx.events.subscribe() as queue:
        r = await reporter.post(LEGACY, json=report(name, host="db7"))
        assert r.status_code == 201 and r.json()["recovered"] is True
        recovered = await asyncio.wait_for(queue.get(), 5)
        while recovered.type != "external_job.recovered":
            recovered = await asyncio.wait_for(queue.get(), 5)
    assert recovered.data["external_job_id"] == job["id"] and recovered.data["host"] == "db7"
    assert r.json()["job"]["overdue_since"] is None
    # a new period: due again a full interval after the new report, then raised again once
    new_due = parse(r.json()["job"]["next_report_due_at"])
    assert mine(await check_overdue(ctx, now=new_due), job["id"]) == []
    assert len(mine(await check_overdue(ctx, now=new_due + timedelta(seconds=1)), job["id"])) == 1

    # a disabled job is never overdue
    await reporter.post(LEGACY, json=report(name, host="db7"))
    await admin.put(f"{JOBS}/{job['id']}", json={"enabled": False})
    assert mine(await check_overdue(ctx, now=due + timedelta(days=30)), job["id"]) == []


async def test_a_job_that_never_reported_is_critical(api: Api, admin: httpx.AsyncClient) -> None:
    ctx = api.app.state.ctx
    job = (
        await admin.post(
            JOBS, json={"name": uid("silent-"), "expected_interval_minutes": 30, "grace_minutes": 0}
        )
    ).json()
    due = parse(job["next_report_due_at"])
    assert due == parse(job["created_at"]) + timedelta(minutes=30)
    [event] = mine(await check_overdue(ctx, now=due + timedelta(seconds=1)), job["id"])
    assert event.data["severity"] == "critical" and event.data["last_report_at"] is None


async def test_the_watch_loop_raises_overdue_on_the_real_clock(
    api: Api, admin: httpx.AsyncClient
) -> None:
    ctx = api.app.state.ctx
    job = (
        await admin.post(
            JOBS, json={"name": uid("loop-"), "expected_interval_minutes": 1, "grace_minutes": 0}
        )
    ).json()
    # travel: the job was last heard of two hours ago
    async with ctx.db.write_session() as session:
        await session.execute(
            update(ExternalJob)
            .where(ExternalJob.id == job["id"])
            .values(last_report_at=datetime.now(UTC) - timedelta(hours=2), last_status="success")
        )
        await session.commit()
    async with ctx.events.subscribe() as queue:
        loop = asyncio.create_task(run_forever(ctx, 0.05))
        try:
            event = await asyncio.wait_for(queue.get(), 10)
            while event.data.get("external_job_id") != job["id"]:
                event = await asyncio.wait_for(queue.get(), 10)
        finally:
            loop.cancel()
    assert event.type == "external_job.overdue" and event.data["severity"] == "warning"
