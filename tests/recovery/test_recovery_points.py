"""`/backup/recovery-points`: completed backups only; restore and delete do exactly what
`POST /backups/{id}/restore` and `DELETE /backups/{id}` do, on a real PostgreSQL backup."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.helpers import psql
from tests.recovery.test_backup_status import add_backups
from tests.schedules.helpers import make_server, wait_job

POINTS = "/api/v1/backup/recovery-points"


@pytest.fixture
def scratch_names() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def real_backup(
    api: Api, admin: httpx.AsyncClient, server_id: int, db: str
) -> dict[str, Any]:
    r = await admin.post("/api/v1/backups", json={"server_id": server_id, "database_name": db})
    assert r.status_code == 202, r.text
    job = await wait_job(api, admin, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    backup: dict[str, Any] = (await admin.get(f"/api/v1/backups/{r.json()['id']}")).json()
    return backup


async def stored_keys(admin: httpx.AsyncClient, storage_id: int) -> set[str]:
    listed = (await admin.get(f"/api/v1/storage/{storage_id}/backups")).json()
    return {item["key"] for item in listed["items"]}


async def test_restore_and_delete_go_through_the_backups_service(
    api: Api,
    admin: httpx.AsyncClient,
    make_user: UserFactory,
    source_db: str,
    scratch_names: list[str],
) -> None:
    server = await make_server(admin)
    backup = await real_backup(api, admin, server["id"], source_db)
    [failed] = await add_backups(api, server, source_db, [(timedelta(minutes=5), "failed", None)])

    listed = (await admin.get(POINTS, params={"server_id": server["id"]})).json()
    assert [p["id"] for p in listed["items"]] == [backup["id"]] and listed["total"] == 1
    point = (await admin.get(f"{POINTS}/{backup['id']}")).json()
    assert point["checksum"] == backup["checksum"] and point["status"] == "completed"
    assert point["point_in_time"] == backup["started_at"]
    # a failed backup, an unknown id: no recovery point
    for ident in (failed, 2**31 - 1):
        assert_error(await admin.get(f"{POINTS}/{ident}"), 404, "NOT_FOUND")
        r = await admin.post(f"{POINTS}/{ident}/restore", json={"target_database": "oc_x"})
        assert_error(r, 404, "NOT_FOUND")
        assert_error(await admin.delete(f"{POINTS}/{ident}"), 404, "NOT_FOUND")
    assert (await admin.get(f"/api/v1/backups/{failed}")).status_code == 200

    # bad input, wrong role, no auth: refused before anything is queued
    jobs_before = (await admin.get("/api/v1/jobs")).json()["total"]
    for bad in (
        {},
        {"target_database": ""},
        {"target_database": "x", "drop_existing": "perhaps"},
        {"target_database": "x", "surprise": 1},
    ):
        r = await admin.post(f"{POINTS}/{backup['id']}/restore", json=bad)
        assert_error(r, 422, "VALIDATION_ERROR")
    assert_error(await admin.get(f"{POINTS}/0"), 422, "VALIDATION_ERROR")
    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        assert (await c.get(POINTS)).status_code == 200
        r = await c.post(f"{POINTS}/{backup['id']}/restore", json={"target_database": "oc_x"})
        assert_error(r, 403, "FORBIDDEN")
        assert_error(await c.delete(f"{POINTS}/{backup['id']}"), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        assert_error(await anonymous.get(POINTS), 401, "UNAUTHORIZED")
        r = await anonymous.post(f"{POINTS}/{backup['id']}/restore", json={"target_database": "x"})
        assert_error(r, 401, "UNAUTHORIZED")
        assert_error(await anonymous.delete(f"{POINTS}/{backup['id']}"), 401, "UNAUTHORIZED")
    assert (await admin.get("/api/v1/jobs")).json()["total"] == jobs_before

    # restore: a real restore job, the data arrives
    target = f"oc_rp_{uuid.uuid4().hex[:8]}"
    scratch_names.append(target)
    r = await admin.post(f"{POINTS}/{backup['id']}/restore", json={"target_database": target})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["id"] == backup["id"] and accepted["status_url"].endswith(
        str(accepted["job_id"])
    )
    job = await wait_job(api, admin, accepted["job_id"])
    assert (job["status"], job["kind"]) == ("succeeded", "restore"), job
    assert psql("SELECT count(*) FROM items", target) == "50"
    # ... with the backups route's own target check: a non-empty database needs drop_existing
    r = await admin.post(f"{POINTS}/{backup['id']}/restore", json={"target_database": target})
    assert_error(r, 409, "CONFLICT")
    assert "drop_existing" in r.json()["detail"]

    # delete: artifact and manifest leave the storage, then the catalog row; audited as such
    assert backup["storage_path"] in await stored_keys(admin, backup["storage_id"])
    assert (await admin.delete(f"{POINTS}/{backup['id']}")).status_code == 204
    assert backup["storage_path"] not in await stored_keys(admin, backup["storage_id"])
    assert_error(await admin.get(f"/api/v1/backups/{backup['id']}"), 404, "NOT_FOUND")
    assert_error(await admin.delete(f"{POINTS}/{backup['id']}"), 404, "NOT_FOUND")
    audit = (await admin.get("/api/v1/audit/logs", params={"action": "backup.delete"})).json()
    assert str(backup["id"]) in {str(e["resource_id"]) for e in audit["items"]}
