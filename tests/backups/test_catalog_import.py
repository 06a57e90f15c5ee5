"""Disaster recovery: a new installation (new metadata database) adopts the artifacts it
finds in storage, and an uploaded artifact is checked against its manifest."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from opscenter.app import create_app
from tests.conftest import ADMIN_PASSWORD, Api, make_settings
from tests.helpers import psql


@pytest.fixture
def small_db() -> Iterator[str]:
    name = f"oc_imp_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{name}"')
    psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g", name)
    yield name
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_new_installation_adopts_artifacts_and_uploads(
    api: Api, admin: httpx.AsyncClient, small_db: str, tmp_path: Path
) -> None:
    r = await admin.post(
        "/api/v1/servers",
        json={
            "name": f"pg-{uuid.uuid4().hex[:6]}",
            "type": "postgresql",
            "host": "127.0.0.1",
            "credentials": {"username": "postgres"},
        },
    )
    accepted = (
        await admin.post(
            "/api/v1/backups", json={"server_id": r.json()["id"], "database_name": small_db}
        )
    ).json()
    job = await api.app.state.ctx.runner.wait(accepted["job_id"], limit_seconds=120)
    assert job.status == "succeeded", job.error_message
    backup = (await admin.get(f"/api/v1/backups/{accepted['id']}")).json()
    storage_root = Path(api.settings.data_dir) / "backups"
    artifact = storage_root / backup["storage_path"]
    manifest = Path(str(artifact) + ".manifest.json")

    # A fresh installation whose storage provider points at the same directory.
    fresh = create_app(make_settings(tmp_path / "fresh"))
    async with (
        fresh.router.lifespan_context(fresh),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=fresh), base_url="http://t") as c,
    ):
        login = await c.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        c.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        r = await c.post(
            "/api/v1/storage/providers",
            json={
                "name": "old-backups",
                "type": "local",
                "config": {"path": str(storage_root)},
            },
        )
        assert r.status_code == 201, r.text
        provider = r.json()["id"]
        seen = (await c.get(f"/api/v1/storage/{provider}/backups")).json()
        found = {i["key"]: i for i in seen["items"]}
        assert found[backup["storage_path"]]["in_catalog"] is False

        r = await c.post(f"/api/v1/storage/{provider}/import")
        assert r.status_code == 200, r.text
        assert r.json()["imported"] >= 1
        again = (await c.post(f"/api/v1/storage/{provider}/import")).json()
        assert again["imported"] == 0  # idempotent
        rows = (await c.get("/api/v1/backups", params={"limit": 1000})).json()["items"]
        adopted = next(b for b in rows if b["storage_path"] == backup["storage_path"])
        assert adopted["checksum"] == backup["checksum"] and adopted["status"] == "completed"
        assert adopted["server_id"] is None  # that server does not exist here

        # Upload: a tampered body is refused and nothing is stored; the real one lands.
        header = {
            "X-Backup-Manifest": base64.b64encode(manifest.read_bytes()).decode(),
            "Content-Type": "application/octet-stream",
        }
        body = artifact.read_bytes()
        tampered = body[:-1] + bytes([body[-1] ^ 1])
        # (no storage_id: into this installation's own default storage)
        r = await c.post("/api/v1/backups/import", content=tampered, headers=header)
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR"
        r = await c.post("/api/v1/backups/import", content=body, headers=header)
        assert r.status_code == 201, r.text
        uploaded = r.json()
        assert uploaded["checksum"] == backup["checksum"]
        r = await c.post("/api/v1/backups/import", content=body, headers=header)
        assert r.status_code == 409
        r = await c.post(
            "/api/v1/backups/import",
            content=body,
            headers={**header, "X-Backup-Manifest": "bm90IGEgbWFuaWZlc3Q="},
        )
        assert r.status_code == 422

        # and the uploaded artifact restores, row for row
        target = f"oc_imp_{uuid.uuid4().hex[:8]}"
        r = await c.post(
            "/api/v1/servers",
            json={
                "name": "pg",
                "type": "postgresql",
                "host": "127.0.0.1",
                "credentials": {"username": "postgres"},
            },
        )
        try:
            r = await c.post(
                f"/api/v1/backups/{uploaded['id']}/restore",
                json={"target_server_id": r.json()["id"], "target_database": target},
            )
            assert r.status_code == 202, r.text
            job = await fresh.state.ctx.runner.wait(r.json()["job_id"], limit_seconds=120)
            assert job.status == "failed" and job.error_code == "decrypt_failed"
        finally:
            psql(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
