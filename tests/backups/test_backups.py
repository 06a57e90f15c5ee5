"""Backups through the API, end to end against the real PostgreSQL and MariaDB on
loopback: run, inspect, download, restore (with masking), delete, and the failures."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opscenter.backups import service as backups_service
from opscenter.models import Backup, Job
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.helpers import psql

PG_SERVER = {
    "type": "postgresql",
    "host": "127.0.0.1",
    "port": 5432,
    "credentials": {"username": "postgres"},
}


@pytest.fixture
def source_db() -> Iterator[str]:
    name = f"oc_src_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{name}"')
    psql(
        "CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL, phone varchar(20),"
        " notes jsonb, photo bytea, tags text[]);"
        "INSERT INTO customers (email, phone, notes, photo, tags)"
        " SELECT 'user' || g || '@example.com', '+1-555-' || lpad(g::text, 4, '0'),"
        " jsonb_build_object('n', g), decode(md5(g::text), 'hex'), ARRAY['a', 'b' || g]"
        " FROM generate_series(1, 500) g;"
        "CREATE TABLE orders (id serial PRIMARY KEY, customer_email text, total numeric(10,2));"
        "INSERT INTO orders (customer_email, total)"
        " SELECT 'user' || (g % 50 + 1) || '@example.com', g * 1.5 FROM generate_series(1, 200) g;",
        name,
    )
    yield name
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def scratch_names() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table_hash(db: str, table: str, columns: str = "*") -> str:
    return psql(
        f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM "
        f"(SELECT {columns} FROM {table}) t",
        db,
    )


async def make_server(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/servers", json={"name": f"pg-{uuid.uuid4().hex[:6]}", **PG_SERVER, **fields}
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def run_job(api: Api, client: httpx.AsyncClient, accepted: httpx.Response) -> dict[str, Any]:
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status_url"] == f"/api/v1/jobs/{body['job_id']}"
    await api.app.state.ctx.runner.wait(body["job_id"], limit_seconds=120)
    job: dict[str, Any] = (await client.get(body["status_url"])).json()
    return job


async def test_backup_restore_download_delete(
    api: Api, admin: httpx.AsyncClient, source_db: str, scratch_names: list[str]
) -> None:
    server = await make_server(admin)
    accepted = await admin.post(
        "/api/v1/backups", json={"server_id": server["id"], "database_name": source_db}
    )
    job = await run_job(api, admin, accepted)
    assert job["status"] == "succeeded", job
    backup = (await admin.get(f"/api/v1/backups/{accepted.json()['id']}")).json()
    assert backup["status"] == "completed" and backup["is_encrypted"] is True
    assert backup["compression_type"] == "zstd" and backup["checksum"].startswith("sha256:")
    assert backup["size_bytes"] > 0 and backup["original_size_bytes"] > backup["size_bytes"]
    assert (
        backup["row_counts"].get("public.customers", backup["row_counts"].get("customers")) == 500
    )

    listed = (await admin.get(f"/api/v1/storage/{backup['storage_id']}/backups")).json()
    stored = {i["key"]: i for i in listed["items"]}
    assert stored[backup["storage_path"]]["in_catalog"] is True
    assert stored[backup["storage_path"]]["backup_id"] == backup["id"]

    # download: the whole object hashes to the recorded checksum; a range is served as 206
    link = (await admin.post(f"/api/v1/backups/{backup['id']}/download")).json()
    async with api.client() as anonymous:  # the signature is the authorization
        r = await anonymous.get(link["download_url"])
        assert r.status_code == 200
        assert "sha256:" + hashlib.sha256(r.content).hexdigest() == backup["checksum"]
        part = await anonymous.get(link["download_url"], headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == r.content[10:20]
        forged = link["download_url"].replace("signature=", "signature=x")
        assert (await anonymous.get(forged)).status_code == 403

    # restore into a new database, masking emails with a deterministic hash
    target = f"oc_dst_{uuid.uuid4().hex[:8]}"
    scratch_names.append(target)
    accepted = await admin.post(
        f"/api/v1/backups/{backup['id']}/restore",
        json={
            "target_database": target,
            "mask_sensitive_data": True,
            "masking_rules": {"email": "hash", "customer_email": "hash", "phone": "randomize"},
        },
    )
    job = await run_job(api, admin, accepted)
    assert job["status"] == "succeeded", job
    assert job["result"]["masked"]["rows_updated"] == 500 + 200 + 500
    # unmasked columns are identical row for row; masked ones changed shape-preservingly
    for table, cols in (("customers", "id, notes, photo, tags"), ("orders", "id, total")):
        assert table_hash(target, table, cols) == table_hash(source_db, table, cols)
    assert psql("SELECT count(*) FROM customers WHERE email LIKE '%@example.com'", target) == "0"
    phone = psql("SELECT phone FROM customers WHERE id = 7", target)
    assert phone != "+1-555-0007" and len(phone) == len("+1-555-0007") and phone.startswith("+")
    # the same email hashes to the same value in both tables: joins still work
    joined = psql(
        "SELECT count(*) FROM orders o JOIN customers c ON c.email = o.customer_email", target
    )
    assert joined == "200"
    assert (
        psql("SELECT count(*) FROM customers WHERE email LIKE '%@example.com'", source_db) == "500"
    )

    # restoring over the now non-empty database needs drop_existing
    r = await admin.post(
        f"/api/v1/backups/{backup['id']}/restore", json={"target_database": target}
    )
    assert r.status_code == 409 and "drop_existing" in r.json()["detail"]
    job = await run_job(
        api,
        admin,
        await admin.post(
            f"/api/v1/backups/{backup['id']}/restore",
            json={"target_database": target, "drop_existing": True},
        ),
    )
    assert job["status"] == "succeeded", job
    assert table_hash(target, "customers") == table_hash(source_db, "customers")
    # replacing runs in one transaction, which pg_restore --jobs cannot
    r = await admin.post(
        f"/api/v1/backups/{backup['id']}/restore",
        json={"target_database": target, "drop_existing": True, "parallel_jobs": 2},
    )
    assert r.status_code == 422 and "parallel" in r.json()["detail"], r.text

    # a parallel restore (pg_restore --jobs from a staged file) into another new database
    parallel = f"oc_dst_{uuid.uuid4().hex[:8]}"
    scratch_names.append(parallel)
    for bad in (0, 17, "two"):
        r = await admin.post(
            f"/api/v1/backups/{backup['id']}/restore",
            json={"target_database": parallel, "parallel_jobs": bad},
        )
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR"
    job = await run_job(
        api,
        admin,
        await admin.post(
            f"/api/v1/backups/{backup['id']}/restore",
            json={"target_database": parallel, "parallel_jobs": 2},
        ),
    )
    assert job["status"] == "succeeded", job
    for table in ("customers", "orders"):
        assert table_hash(parallel, table) == table_hash(source_db, table)
    assert not list((api.settings.data_dir / "tmp").glob(".opscenter-restore-*"))

    # delete removes object and manifest, then the row
    r = await admin.delete(f"/api/v1/backups/{backup['id']}")
    assert r.status_code == 204
    listed = (await admin.get(f"/api/v1/storage/{backup['storage_id']}/backups")).json()
    assert backup["storage_path"] not in {i["key"] for i in listed["items"]}
    assert (await admin.get(f"/api/v1/backups/{backup['id']}")).status_code == 404


async def test_failed_backup_says_why_and_leaves_nothing(
    api: Api, admin: httpx.AsyncClient
) -> None:
    server = await make_server(admin)
    accepted = await admin.post(
        "/api/v1/backups", json={"server_id": server["id"], "database_name": "no_such_db_here"}
    )
    job = await run_job(api, admin, accepted)
    assert job["status"] == "failed" and job["error_code"] == "database_missing", job
    backup = (await admin.get(f"/api/v1/backups/{accepted.json()['id']}")).json()
    assert backup["status"] == "failed" and backup["error_code"] == "database_missing"
    assert backup["storage_path"] is None and "no_such_db_here" in backup["error_message"]
    listed = (await admin.get(f"/api/v1/storage/{backup['storage_id']}/backups")).json()
    assert not [k for k in listed["orphans"] if "no_such_db_here" in k]


async def test_transient_failures_are_retried_a_bounded_number_of_times(
    api: Api, admin: httpx.AsyncClient
) -> None:
    server = await make_server(admin, port=1)  # nothing listens: unreachable, transient
    job = await run_job(
        api,
        admin,
        await admin.post("/api/v1/backups", json={"server_id": server["id"], "database_name": "x"}),
    )
    assert job["status"] == "failed" and job["error_code"] == "unreachable", job
    assert job["result"]["attempts"] == 1 + api.settings.backup_retries == 3
    # a permanent failure is not retried
    job = await run_job(
        api,
        admin,
        await admin.post(
            "/api/v1/backups",
            json={
                "server_id": (await make_server(admin))["id"],
                "database_name": "no_such_db_at_all",
            },
        ),
    )
    assert job["error_code"] == "database_missing" and job["result"]["attempts"] == 1


async def test_production_target_needs_confirmation(
    api: Api, admin: httpx.AsyncClient, source_db: str, scratch_names: list[str]
) -> None:
    server = await make_server(admin)
    prod = await make_server(admin, environment="production")
    job = await run_job(
        api,
        admin,
        await admin.post(
            "/api/v1/backups",
            json={
                "server_id": server["id"],
                "database_name": source_db,
                "compress": False,
                "encrypt": False,
            },
        ),
    )
    assert job["status"] == "succeeded", job
    backup = (await admin.get(f"/api/v1/backups/{job['resource_id']}")).json()
    assert backup["is_encrypted"] is False and backup["compression_type"] == "none"
    target = f"oc_dst_{uuid.uuid4().hex[:8]}"
    scratch_names.append(target)
    body = {"target_server_id": prod["id"], "target_database": target}
    r = await admin.post(f"/api/v1/backups/{backup['id']}/restore", json=body)
    assert r.status_code == 409 and "confirm" in r.json()["detail"]
    job = await run_job(
        api,
        admin,
        await admin.post(
            f"/api/v1/backups/{backup['id']}/restore", json={**body, "confirm": target}
        ),
    )
    assert job["status"] == "succeeded", job
    assert table_hash(target, "orders") == table_hash(source_db, "orders")


@pytest.mark.parametrize(
    "body, status",
    [
        ({"database_name": "x", "source_path": "/tmp"}, 422),
        ({}, 422),
        ({"database_name": "x", "compression_type": "brotli"}, 422),
        ({"database_name": "x", "db_type": "mysql"}, 422),
        ({"database_name": "x", "storage_id": 999999}, 404),
        ({"database_name": "x", "unknown": 1}, 422),
        ({"database_name": "x", "server_id": True}, 422),  # true is not server 1
        ({"database_name": "x", "storage_ids": [True]}, 422),
        ({"database_name": "x\nDROP"}, 422),
        ({"database_name": "x", "parallel_streams": 0}, 422),
        ({"database_name": "x", "parallel_streams": 17}, 422),
        ({"database_name": "x", "parallel_streams": 2.5}, 422),
    ],
)
async def test_bad_backup_requests(
    api: Api, admin: httpx.AsyncClient, body: dict[str, Any], status: int
) -> None:
    server = await make_server(admin)
    before = (await admin.get("/api/v1/backups", params={"server_id": server["id"]})).json()[
        "total"
    ]
    r = await admin.post("/api/v1/backups", json={"server_id": server["id"], **body})
    assert r.status_code == status, r.text
    after = (await admin.get("/api/v1/backups", params={"server_id": server["id"]})).json()["total"]
    assert before == after == 0


async def test_parallel_streams_are_for_postgresql_and_mysql(
    api: Api, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    db = str(tmp_path / "app.db")
    server = await make_server(admin, type="sqlite", paths=[db], host=None, port=None)
    r = await admin.post(
        "/api/v1/backups",
        json={"server_id": server["id"], "database_name": db, "parallel_streams": 2},
    )
    assert "MySQL" in assert_error(r, 422, "VALIDATION_ERROR")["detail"]
    listed = await admin.get("/api/v1/backups", params={"server_id": server["id"]})
    assert listed.json()["total"] == 0


async def test_roles_on_backups(api: Api, admin: httpx.AsyncClient, make_user: UserFactory) -> None:
    server = await make_server(admin)
    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        assert (await c.get("/api/v1/backups")).status_code == 200
        r = await c.post("/api/v1/backups", json={"server_id": server["id"], "database_name": "x"})
        assert r.status_code == 403
        r = await c.post("/api/v1/backups/1/restore", json={"target_database": "x"})
        assert r.status_code == 403
    async with api.client() as c:
        assert (await c.get("/api/v1/backups")).status_code == 401
        assert (await c.get("/api/v1/jobs")).status_code == 401


async def test_cancel_a_running_backup_removes_partial_output(
    api: Api, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    # A sparse 64 GiB file: tar reads it for long enough to be cancelled mid-stream.
    source = tmp_path / "big"
    source.mkdir()
    with open(source / "sparse.bin", "wb") as fh:
        fh.truncate(64 * 1024**3)
    r = await admin.post(
        "/api/v1/servers",
        json={"name": f"files-{uuid.uuid4().hex[:6]}", "type": "local", "paths": [str(source)]},
    )
    server = r.json()
    storage_root = Path(api.settings.data_dir) / "backups"
    before = {p for p in storage_root.rglob("*") if p.is_file()}
    r = await admin.post(
        "/api/v1/backups", json={"server_id": server["id"], "source_path": str(source)}
    )
    assert r.status_code == 202, r.text
    job_id, backup_id = r.json()["job_id"], r.json()["id"]
    for _ in range(300):
        job = (await admin.get(f"/api/v1/jobs/{job_id}")).json()
        if job["status"] == "running" and job["bytes_done"] > 0:
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "running", job
    r = await admin.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    job_row = await api.app.state.ctx.runner.wait(job_id, limit_seconds=60)
    assert job_row.status == "cancelled"
    backup = (await admin.get(f"/api/v1/backups/{backup_id}")).json()
    assert backup["status"] == "cancelled" and backup["storage_path"] is None
    # nothing of it is left: the storage holds exactly what it held before
    assert {p for p in storage_root.rglob("*") if p.is_file()} == before
    r = await admin.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409 and r.json()["code"] == "CONFLICT"


async def test_a_restart_during_the_finisher_keeps_a_completed_backup(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    """The finisher runs before the job turns terminal: a process that dies right then
    leaves a `running` job over a `completed` backup. Reconciling marks the job
    interrupted and must not rewrite the backup, whose artifact is whole."""
    server = await make_server(admin)
    accepted = await admin.post(
        "/api/v1/backups", json={"server_id": server["id"], "database_name": source_db}
    )
    job = await run_job(api, admin, accepted)
    assert job["status"] == "succeeded", job
    runner = api.app.state.ctx.runner
    await runner.write(job["id"], status="running", finished_at=None)  # as if it died there
    await runner.reconcile()
    assert (await admin.get(f"/api/v1/jobs/{job['id']}")).json()["status"] == "interrupted"
    backup = (await admin.get(f"/api/v1/backups/{accepted.json()['id']}")).json()
    assert backup["status"] == "completed" and backup["error_code"] is None, backup
    link = (await admin.post(f"/api/v1/backups/{backup['id']}/download")).json()
    assert link["download_url"]


async def test_one_job_per_restore_target(
    api: Api, admin: httpx.AsyncClient, source_db: str, scratch_names: list[str]
) -> None:
    """A second restore into a target a job is working on is refused (409), never run
    after or beside the first; the 202 says so."""
    server = await make_server(admin)
    job = await run_job(
        api,
        admin,
        await admin.post(
            "/api/v1/backups", json={"server_id": server["id"], "database_name": source_db}
        ),
    )
    backup_id = job["resource_id"]
    target = f"oc_dst_{uuid.uuid4().hex[:8]}"
    scratch_names.append(target)
    body = {"target_database": target, "drop_existing": True}
    first = await admin.post(f"/api/v1/backups/{backup_id}/restore", json=body)
    assert first.status_code == 202 and "one job per target" in first.json()["message"]
    second = await admin.post(f"/api/v1/backups/{backup_id}/restore", json=body)
    assert second.status_code == 409 and second.json()["code"] == "CONFLICT", second.text
    assert f"job {first.json()['job_id']}" in second.json()["detail"]
    assert (await run_job(api, admin, first))["status"] == "succeeded"
    # once it ended, the target takes the next one
    again = await admin.post(f"/api/v1/backups/{backup_id}/restore", json=body)
    assert (await run_job(api, admin, again))["status"] == "succeeded"


async def test_a_storage_that_refuses_writes_is_not_retried(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    """A storage refusing the write for good (here its root is a file; read-only or
    permission denied alike) fails the backup at once: retrying cannot help."""
    root = api.settings.data_dir / "backups"  # the data dir outlives this test: put it back
    root.mkdir(parents=True, exist_ok=True)
    away = root.with_name(f"backups.{uuid.uuid4().hex[:8]}")
    root.rename(away)
    root.write_bytes(b"not a directory")
    try:
        server = await make_server(admin)
        job = await run_job(
            api,
            admin,
            await admin.post(
                "/api/v1/backups", json={"server_id": server["id"], "database_name": source_db}
            ),
        )
    finally:
        root.unlink()
        away.rename(root)
    assert job["status"] == "failed" and job["error_code"] == "storage_failed", job
    assert job["result"]["attempts"] == 1


async def test_start_up_removes_the_globals_and_parts_a_killed_backup_left(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    """Killed after the cluster globals were stored but before the dump's manifest: the
    globals object has nothing to belong to; start-up removes it and says so."""
    server = await make_server(admin)
    ctx = api.app.state.ctx
    async with ctx.db.write_session() as session:
        provider = await backups_service.default_storage(session, server["team_id"])
        backup = Backup(
            team_id=server["team_id"],
            server_id=server["id"],
            storage_id=provider.id,
            database_name=source_db,
            db_type="postgresql",
            status="running",
        )
        session.add(backup)
        await session.flush()
        job = Job(
            kind="backup",
            team_id=server["team_id"],
            status="running",
            params={"backup_id": backup.id},
            resource_type="backup",
            resource_id=backup.id,
        )
        session.add(job)
        await session.commit()
    storage = ctx.storages.get(provider)
    orphan = f"postgresql/{source_db}/20260101T000000Z-0a1b2c3d.globals.sql.zst.age"
    # and the committed parts of a parallel backup (its first part is committed last)
    part = f"postgresql/{source_db}/20260101T000000Z-0a1b2c3d.data-2.dump.zst.age"
    for key in (orphan, part):
        async with await storage.open_writer(key) as writer:
            await writer.write(b"roles")
            await writer.commit()
    other = f"postgresql/{source_db}/notes.txt"  # not ours: stays
    async with await storage.open_writer(other) as writer:
        await writer.write(b"mine")
        await writer.commit()

    await ctx.runner.reconcile()  # what start-up does after a kill

    assert not await storage.exists(orphan) and not await storage.exists(part)
    assert await storage.exists(other)
    await storage.delete(other)  # the storage outlives this test
    assert (await admin.get(f"/api/v1/backups/{backup.id}")).json()["status"] == "interrupted"
    log = (await admin.get("/api/v1/audit/logs", params={"action": "backup.interrupted"})).json()
    [entry] = [e for e in log["items"] if e["resource_id"] == str(backup.id)]
    assert entry["details"]["orphans_removed"] == [part, orphan]


async def test_downloading_a_backup_needs_download_permission(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    # A download link hands over the whole artifact: reading the data, not its catalog row.
    viewer = await make_user("viewer")
    token = {"name": "read-only script", "role": "viewer"}
    key = (await admin.post("/api/v1/admin/tokens", json=token)).json()["key"]
    missing = "/api/v1/backups/2147483647/download"
    for headers in (viewer.headers, {"X-API-Key": key}):
        async with api.client(headers) as c:
            assert_error(await c.post(missing), 403, "FORBIDDEN")
    operator = await make_user("operator")
    async with operator.client(api) as c:
        assert_error(await c.post(missing), 404, "NOT_FOUND")
