"""The built-in runbook "verify the latest backups of a server": added to a team, run on
a PostgreSQL server with a real backup, its verify step deep-checks the newest backup of
each database (jobs of the verify domain) and the run waits for a person to review."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.commands.helpers import unique
from tests.conftest import Api, UserFactory
from tests.helpers import psql


@pytest.fixture
def small_db() -> Iterator[str]:
    name = f"oc_sop_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{name}"')
    psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g", name)
    yield name
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_verify_latest_backups(api: Api, admin: httpx.AsyncClient, small_db: str) -> None:
    builtins = (await admin.get("/api/v1/sops/builtins")).json()["items"]
    assert "verify-latest-backups" in [b["key"] for b in builtins]
    server = (
        await admin.post(
            "/api/v1/servers",
            json={
                "name": unique("pg"),
                "type": "postgresql",
                "host": "127.0.0.1",
                "port": 5432,
                "credentials": {"username": "postgres"},
            },
        )
    ).json()
    r = await admin.post(
        "/api/v1/sops/builtins/verify-latest-backups",
        json={"server_ids": [server["id"]], "name": unique("verify")},
    )
    assert r.status_code == 201, r.text
    sop = r.json()
    assert sop["builtin"] == "verify-latest-backups" and sop["steps"][0]["type"] == "verify"
    assert (await admin.post("/api/v1/sops/builtins/nope", json={})).status_code == 404

    # Nothing to verify yet: the step fails and says why.
    r = await admin.post(f"/api/v1/sops/{sop['id']}/execute", json={})
    await api.app.state.ctx.runner.wait(r.json()["job_id"], limit_seconds=60)
    run = (await admin.get(f"/api/v1/sops/executions/{r.json()['id']}")).json()
    assert (
        run["status"] == "failed" and "no completed backup" in run["steps"][0]["outputs"]["error"]
    )

    accepted = await admin.post(
        "/api/v1/backups", json={"server_id": server["id"], "database_name": small_db}
    )
    await api.app.state.ctx.runner.wait(accepted.json()["job_id"], limit_seconds=120)
    backup_id = accepted.json()["id"]
    r = await admin.post(f"/api/v1/sops/{sop['id']}/execute", json={})
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    run: dict[str, Any] = {}
    for _ in range(600):  # the verify job runs, then the watcher moves the run on
        run = (await admin.get(f"/api/v1/sops/executions/{run_id}")).json()
        if run["status"] in ("waiting", "failed", "completed"):
            break
        await asyncio.sleep(0.1)
    assert run["status"] == "waiting" and run["current_step"] == 1, run
    step = run["steps"][0]
    assert step["status"] == "completed" and step["outputs"]["backup_ids"] == [backup_id]
    assert step["outputs"]["results"] == {str(backup_id): "passed"}
    backup = (await admin.get(f"/api/v1/backups/{backup_id}")).json()
    assert backup["verification_status"] == "deep_ok"


async def test_staging_restore_with_masking_end_to_end(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, small_db: str
) -> None:
    psql(
        "CREATE TABLE customers AS SELECT g AS id, 'c' || g || '@example.com' AS email, "
        "'+41 79 ' || g AS phone FROM generate_series(1, 50) g",
        small_db,
    )
    pg = {"type": "postgresql", "host": "127.0.0.1", "port": 5432,
          "credentials": {"username": "postgres"}}  # fmt: skip
    prod = (
        await admin.post(
            "/api/v1/servers", json={"name": unique("prod"), "environment": "production", **pg}
        )
    ).json()
    staging = (
        await admin.post(
            "/api/v1/servers", json={"name": unique("staging"), "environment": "staging", **pg}
        )
    ).json()
    accepted = await admin.post(
        "/api/v1/backups", json={"server_id": prod["id"], "database_name": small_db}
    )
    await api.app.state.ctx.runner.wait(accepted.json()["job_id"], limit_seconds=120)
    target_db = f"oc_staging_{uuid.uuid4().hex[:8]}"
    try:
        r = await admin.post(
            "/api/v1/sops/builtins/staging-restore",
            json={
                "name": unique("refresh"),
                "server_ids": [prod["id"]],
                "database_name": small_db,
                "target_server_id": staging["id"],
                "target_database": target_db,
                "masking_rules": {"customers.email": "hash", "customers.phone": "null"},
            },
        )
        assert r.status_code == 201, r.text
        sop = r.json()
        r = await admin.post(f"/api/v1/sops/{sop['id']}/execute", json={})
        await api.app.state.ctx.runner.wait(r.json()["job_id"], limit_seconds=60)
        run_id = r.json()["id"]
        approver = await make_user("admin")
        async with approver.client(api) as c:
            r = await c.post(f"/api/v1/sops/executions/{run_id}/steps/0/approve", json={})
            assert r.status_code == 200, r.text
        run: dict[str, Any] = {}
        for _ in range(900):  # the restore job runs, then the watcher moves the run on
            run = (await admin.get(f"/api/v1/sops/executions/{run_id}")).json()
            if run["status"] in ("failed", "completed", "waiting") and run["current_step"] != 0:
                break
            await asyncio.sleep(0.1)
        assert run["current_step"] == 2 and run["status"] == "waiting", run["steps"][1]
        assert run["steps"][1]["status"] == "completed"
        # Restored, and masked in the target: same rows, no original e-mail, no phone.
        assert psql("SELECT count(*) FROM customers", target_db) == "50"
        assert psql("SELECT count(*) FROM customers WHERE email LIKE 'c%@example.com'",
                    target_db) == "0"  # fmt: skip
        assert psql("SELECT count(*) FROM customers WHERE phone IS NOT NULL", target_db) == "0"
        assert psql("SELECT count(*) FROM customers", small_db) == "50"
    finally:
        psql(f'DROP DATABASE IF EXISTS "{target_db}" WITH (FORCE)')
