"""One dump, several destinations through the API: `POST /backups` with `storage_ids`
and a schedule with several storages; each copy is its own backup row."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backups.test_backups import make_server, run_job
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.helpers import psql


@pytest.fixture
def source_db() -> Iterator[str]:
    name = f"oc_src_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{name}"')
    psql(
        "CREATE TABLE t (id serial PRIMARY KEY, v text);"
        "INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 300) g;",
        name,
    )
    yield name
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def default_provider(client: httpx.AsyncClient) -> dict[str, Any]:
    providers = (await client.get("/api/v1/storage/providers")).json()["items"]
    found: dict[str, Any] = next(p for p in providers if p["is_default"])
    return found


async def local_provider(client: httpx.AsyncClient, root: Path, **fields: Any) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    r = await client.post(
        "/api/v1/storage/providers",
        json={
            "name": f"copy-{uuid.uuid4().hex[:6]}",
            "type": "local",
            "config": {"path": str(root)},
            **fields,
        },
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def backups_of(client: httpx.AsyncClient, server_id: int) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/backups", params={"server_id": server_id, "limit": 100})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return sorted(items, key=lambda b: b["id"])


async def download(api: Api, client: httpx.AsyncClient, backup_id: int) -> bytes:
    link = (await client.post(f"/api/v1/backups/{backup_id}/download")).json()
    async with api.client() as anonymous:
        r = await anonymous.get(link["download_url"])
    assert r.status_code == 200, r.text
    return r.content


async def test_backup_written_to_two_storages(
    api: Api, admin: httpx.AsyncClient, source_db: str, tmp_path: Path
) -> None:
    first = await default_provider(admin)
    second = await local_provider(admin, tmp_path / "second")
    server = await make_server(admin)
    accepted = await admin.post(
        "/api/v1/backups",
        json={
            "server_id": server["id"],
            "database_name": source_db,
            "storage_ids": [first["id"], second["id"]],
        },
    )
    job = await run_job(api, admin, accepted)
    assert job["status"] == "succeeded", job
    primary, copy = await backups_of(admin, server["id"])
    assert primary["id"] == accepted.json()["id"]
    assert (primary["storage_id"], primary["copy_of_id"]) == (first["id"], None)
    assert (copy["storage_id"], copy["copy_of_id"]) == (second["id"], primary["id"])
    assert primary["status"] == copy["status"] == "completed"
    assert primary["job_id"] == copy["job_id"] == job["id"]
    for field in ("checksum", "size_bytes", "storage_path", "row_counts", "encryption_key_ids"):
        assert copy[field] == primary[field], field
    assert [c["backup_id"] for c in job["result"]["copies"]] == [copy["id"]]
    # The copy is in the second storage, with its manifest, and downloads on its own.
    stored = sorted(p.name for p in (tmp_path / "second").rglob("*") if p.is_file())
    name = copy["storage_path"].rsplit("/", 1)[-1]
    assert name in stored and f"{name}.manifest.json" in stored
    content = await download(api, admin, copy["id"])
    assert "sha256:" + hashlib.sha256(content).hexdigest() == copy["checksum"]
    # Deleting the primary leaves the copy whole (copy_of_id is cleared).
    assert (await admin.delete(f"/api/v1/backups/{primary['id']}")).status_code == 204
    after = (await admin.get(f"/api/v1/backups/{copy['id']}")).json()
    assert after["status"] == "completed" and after["copy_of_id"] is None


async def test_bad_storage_ids_are_refused_and_nothing_is_written(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    first = await default_provider(admin)
    second = await local_provider(admin, tmp_path / "second")
    server = await make_server(admin)
    base = {"server_id": server["id"], "database_name": "oc_not_there"}
    for extra in (
        {"storage_ids": [first["id"], first["id"]]},
        {"storage_ids": [first["id"], 2_000_000_000]},
        {"storage_ids": [first["id"]], "storage_id": second["id"]},
        {"storage_ids": [first["id"], second["id"], 11, 12, 13, 14]},
        {"storage_ids": []},
        {"storage_ids": [0]},
        {"storage_ids": "1"},
    ):
        r = await admin.post("/api/v1/backups", json={**base, **extra})
        assert_error(r, 422, "VALIDATION_ERROR")
    # A storage of another team is refused the same way.
    r = await admin.post("/api/v1/users/teams", json={"name": f"t-{uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    other = await local_provider(admin, tmp_path / "other", team_id=r.json()["id"])
    r = await admin.post(
        "/api/v1/backups", json={**base, "storage_ids": [first["id"], other["id"]]}
    )
    assert_error(r, 422, "VALIDATION_ERROR")
    assert await backups_of(admin, server["id"]) == []
    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        r = await c.post("/api/v1/backups", json={**base, "storage_ids": [first["id"]]})
        assert_error(r, 403, "FORBIDDEN")
    async with api.client() as anonymous:
        r = await anonymous.post("/api/v1/backups", json={**base, "storage_ids": [first["id"]]})
        assert_error(r, 401, "UNAUTHORIZED")
    assert await backups_of(admin, server["id"]) == []


async def test_schedule_with_two_storages_writes_both(
    api: Api, admin: httpx.AsyncClient, source_db: str, tmp_path: Path
) -> None:
    first = await default_provider(admin)
    second = await local_provider(admin, tmp_path / "second")
    server = await make_server(admin)
    r = await admin.post(
        "/api/v1/schedules",
        json={
            "name": f"sch-{uuid.uuid4().hex[:6]}",
            "server_id": server["id"],
            "database_name": source_db,
            "cron_expression": "0 3 * * *",
            "storage_ids": [second["id"], first["id"]],
        },
    )
    assert r.status_code == 201, r.text
    schedule = r.json()
    try:
        accepted = await admin.post(f"/api/v1/schedules/{schedule['id']}/run", json={})
        job = await run_job(api, admin, accepted)
        assert job["status"] == "succeeded", job
        executions = (await admin.get(f"/api/v1/schedules/{schedule['id']}/executions")).json()[
            "items"
        ]
        primary, copy = sorted(executions, key=lambda b: b["id"])
        assert primary["id"] == accepted.json()["id"]
        assert (primary["storage_id"], copy["storage_id"]) == (second["id"], first["id"])
        assert copy["copy_of_id"] == primary["id"] and primary["copy_of_id"] is None
        assert primary["status"] == copy["status"] == "completed"
        assert primary["checksum"] == copy["checksum"]
    finally:
        await admin.put(f"/api/v1/schedules/{schedule['id']}", json={"enabled": False})


async def test_a_failed_copy_does_not_fail_the_backup(
    api: Api, admin: httpx.AsyncClient, source_db: str, tmp_path: Path
) -> None:
    first = await default_provider(admin)
    broken_root = tmp_path / "broken"
    broken = await local_provider(admin, broken_root)
    broken_root.rmdir()  # a file where the storage's directory was: every write fails
    broken_root.write_text("not a directory")
    server = await make_server(admin)
    accepted = await admin.post(
        "/api/v1/backups",
        json={
            "server_id": server["id"],
            "database_name": source_db,
            "storage_ids": [first["id"], broken["id"]],
        },
    )
    job = await run_job(api, admin, accepted)
    assert job["status"] == "succeeded", job
    primary, copy = await backups_of(admin, server["id"])
    assert primary["status"] == "completed" and primary["checksum"].startswith("sha256:")
    assert copy["status"] == "failed" and copy["copy_of_id"] == primary["id"]
    assert copy["error_code"] == "storage_failed" and copy["error_message"]
    assert copy["checksum"] is None and copy["storage_path"] is None
    assert job["result"]["copies"] == [
        {
            "backup_id": copy["id"],
            "storage_id": broken["id"],
            "status": "failed",
            "error_code": "storage_failed",
        }
    ]
    assert broken_root.read_text() == "not a directory"
    r = await admin.post(f"/api/v1/backups/{copy['id']}/download")
    assert_error(r, 409, "CONFLICT")
