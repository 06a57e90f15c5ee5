"""Damage seen anywhere marks the backup: a restore that meets a corrupt artifact, a check
that finds it gone. A marked backup raises `backup.corrupt`, is no recovery point and
is no "newest good backup" for the RPO view or retention."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from opscenter.core.events import Event
from tests.conftest import Api
from tests.verify.helpers import (
    artifact_path,
    make_backup,
    make_server,
    psql,
    verify,
    wait_job,
)

POINTS = "/api/v1/backup/recovery-points"


def drain(queue: asyncio.Queue[Event]) -> list[Event]:
    events: list[Event] = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


async def assert_marked(
    admin: httpx.AsyncClient, backup_id: int, status: str, events: list[Event]
) -> None:
    backup = (await admin.get(f"/api/v1/backups/{backup_id}")).json()
    assert backup["status"] == "completed" and backup["verification_status"] == status
    marks = [e for e in events if e.type == "backup.corrupt"]
    assert [e.data["verification_status"] for e in marks] == [status]
    assert marks[0].data["severity"] == "critical"
    points = (await admin.get(POINTS, params={"server_id": backup["server_id"]})).json()
    assert backup_id not in [p["id"] for p in points["items"]]
    assert (await admin.get(f"{POINTS}/{backup_id}")).status_code == 404
    status_view = (await admin.get("/api/v1/backup/status")).json()
    for target in status_view["targets"]:
        assert target.get("last_good_backup_id") != backup_id


async def test_a_restore_that_meets_a_corrupt_artifact_marks_the_backup(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    path = await artifact_path(api, backup_id)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    target = f"oc_dst_{uuid.uuid4().hex[:8]}"
    async with api.app.state.ctx.events.subscribe() as queue:
        r = await admin.post(
            f"/api/v1/backups/{backup_id}/restore", json={"target_database": target}
        )
        assert r.status_code == 202, r.text
        await wait_job(api, r.json()["job_id"])
        job = (await admin.get(f"/api/v1/jobs/{r.json()['job_id']}")).json()
        events = drain(queue)
    psql(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
    assert job["status"] == "failed" and job["error_code"] == "checksum_mismatch", job
    await assert_marked(admin, backup_id, "corrupt", events)
    audit = (await admin.get("/api/v1/audit/logs", params={"action": "backup.corrupt"})).json()
    assert [e for e in audit["items"] if str(e["resource_id"]) == str(backup_id)]


async def test_a_check_that_finds_the_artifact_gone_marks_the_backup_missing(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    (await artifact_path(api, backup_id)).unlink()
    async with api.app.state.ctx.events.subscribe() as queue:
        run = await verify(api, admin, backup_id, test_type="checksum")
        events = drain(queue)
    assert run["status"] == "corrupt" and run["error_code"] == "artifact_missing", run
    await assert_marked(admin, backup_id, "missing", events)
    r = await admin.post(f"/api/v1/backups/{backup_id}/restore", json={"target_database": "x"})
    assert r.status_code == 409 and "missing" in r.json()["detail"]


async def test_a_download_that_finds_the_artifact_gone_marks_the_backup_missing(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    (await artifact_path(api, backup_id)).unlink()
    link = (await admin.post(f"/api/v1/backups/{backup_id}/download")).json()["download_url"]
    async with api.app.state.ctx.events.subscribe() as queue:
        r = await admin.get(link)
        events = drain(queue)
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    await assert_marked(admin, backup_id, "missing", events)
