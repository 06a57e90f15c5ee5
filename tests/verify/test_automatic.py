"""Verification a schedule asks for: a deep check after each of its backups, and a
periodic restore test of its newest backup driven by the scheduler."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx

from opscenter.core.clock import utcnow
from opscenter.schedules.scheduler import Scheduler
from tests.conftest import Api
from tests.verify.helpers import make_server, run_result, scratch_databases, wait_job


async def make_schedule(
    client: httpx.AsyncClient, server_id: int, database: str, **fields: Any
) -> dict[str, Any]:
    body = {
        "name": f"verify-{database}",
        "server_id": server_id,
        "database_name": database,
        "cron_expression": "0 3 * * *",
        **fields,
    }
    r = await client.post("/api/v1/schedules", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def run_schedule(api: Api, client: httpx.AsyncClient, schedule_id: int) -> int:
    r = await client.post(f"/api/v1/schedules/{schedule_id}/run", json={})
    assert r.status_code == 202, r.text
    await wait_job(api, r.json()["job_id"])
    backup_id: int = r.json()["id"]
    return backup_id


async def runs_of(client: httpx.AsyncClient, backup_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (
        await client.get("/api/v1/verify", params={"backup_id": backup_id})
    ).json()["items"]
    return items


async def test_a_schedule_deep_verifies_each_new_backup(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    schedule = await make_schedule(admin, server["id"], source_db, verify_after="deep")
    assert schedule["verify_after"] == "deep" and schedule["restore_test_every_days"] is None
    backup_id = await run_schedule(api, admin, schedule["id"])
    runs: list[dict[str, Any]] = []
    for _ in range(100):  # queued by the backup's finisher, just after the job ended
        runs = await runs_of(admin, backup_id)
        if runs:
            break
        await asyncio.sleep(0.05)
    assert len(runs) == 1 and runs[0]["trigger"] == "after_backup", runs
    assert runs[0]["test_type"] == "deep"
    await wait_job(api, runs[0]["job_id"])
    result = await run_result(admin, backup_id, runs[0]["id"])
    assert result["status"] == "passed" and result["backup_verification_status"] == "deep_ok"

    # switched off: the next backup is not verified
    r = await admin.put(f"/api/v1/schedules/{schedule['id']}", json={"verify_after": "none"})
    assert r.status_code == 200 and r.json()["verify_after"] == "none", r.text
    second = await run_schedule(api, admin, schedule["id"])
    await asyncio.sleep(0.3)
    assert await runs_of(admin, second) == []


async def test_the_scheduler_restore_tests_the_newest_backup_each_period(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    schedule = await make_schedule(admin, server["id"], source_db, restore_test_every_days=7)
    scheduler = Scheduler(api.app.state.ctx, interval_seconds=900)
    now = utcnow()
    # nothing to test before the first backup
    assert await scheduler.restore_test_pass(now, schedule_ids=[schedule["id"]]) == []
    await run_schedule(api, admin, schedule["id"])
    newest = await run_schedule(api, admin, schedule["id"])

    jobs = await scheduler.restore_test_pass(now, schedule_ids=[schedule["id"]])
    assert len(jobs) == 1
    await wait_job(api, jobs[0])
    runs = await runs_of(admin, newest)
    assert len(runs) == 1 and runs[0]["trigger"] == "scheduled"
    result = await run_result(admin, newest, runs[0]["id"])
    assert result["status"] == "passed", result
    assert result["backup_verification_status"] == "restore_verified"
    assert result["scratch_database"] not in scratch_databases()
    shown = (await admin.get(f"/api/v1/schedules/{schedule['id']}")).json()
    assert shown["last_restore_test_at"] is not None

    # not due again within the period; due after it
    later = now + timedelta(days=6)
    assert await scheduler.restore_test_pass(later, schedule_ids=[schedule["id"]]) == []
    due = await scheduler.restore_test_pass(now + timedelta(days=8), schedule_ids=[schedule["id"]])
    assert len(due) == 1
    await wait_job(api, due[0])
    assert len(await runs_of(admin, newest)) == 2


async def test_schedule_verification_fields_are_validated(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    base = {
        "server_id": server["id"],
        "database_name": source_db,
        "cron_expression": "0 3 * * *",
    }
    for bad in (
        {"verify_after": "restore"},
        {"verify_after": "weekly"},
        {"restore_test_every_days": 0},
        {"restore_test_every_days": 400},
        {"restore_test_every_days": "often"},
    ):
        r = await admin.post("/api/v1/schedules", json={"name": f"bad-{source_db}", **base, **bad})
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR", (bad, r.text)
    schedule = await make_schedule(admin, server["id"], source_db)
    assert schedule["verify_after"] == "none"
    r = await admin.put(f"/api/v1/schedules/{schedule['id']}", json={"verify_after": None})
    assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR", r.text
    unchanged = (await admin.get(f"/api/v1/schedules/{schedule['id']}")).json()
    assert unchanged["verify_after"] == "none"
    r = await admin.put(f"/api/v1/schedules/{schedule['id']}", json={"restore_test_every_days": 7})
    assert r.status_code == 200 and r.json()["restore_test_every_days"] == 7, r.text
