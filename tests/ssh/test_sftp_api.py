"""An SFTP storage provider through the API: the test pins the host key, a backup lands
there with its manifest and restores; credentials are never returned."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import admin_client, make_settings
from tests.helpers import psql
from tests.ssh.conftest import SshServer


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(tmp_path, OPSCENTER_OUTBOUND_ALLOWLIST="127.0.0.1")
    async with admin_client(settings) as c:
        yield c


async def test_sftp_provider_end_to_end(
    client: httpx.AsyncClient,
    make_sshd: Callable[[], SshServer],
    ssh_client_key: Path,
    tmp_path: Path,
) -> None:
    sshd = make_sshd()
    remote_dir = tmp_path / "sftp-backups"
    remote_dir.mkdir()
    key_text = ssh_client_key.read_text()
    r = await client.post(
        "/api/v1/storage/providers",
        json={
            "name": "offsite",
            "type": "sftp",
            "config": {
                "host": "127.0.0.1",
                "port": sshd.port,
                "username": getpass.getuser(),
                "path": str(remote_dir),
            },
            "credentials": {"private_key": key_text},
        },
    )
    assert r.status_code == 201, r.text
    provider = r.json()
    assert "PRIVATE KEY" not in r.text and provider["has_credentials"] is True

    r = await client.post("/api/v1/storage/test", json={"provider_id": provider["id"]})
    assert r.json()["success"] is True, r.json()
    pinned = (await client.get(f"/api/v1/storage/providers/{provider['id']}")).json()
    assert pinned["config"]["host_key"] == sshd.host_key_line

    source, target = f"oc_sftp_{uuid.uuid4().hex[:8]}", f"oc_sftp_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{source}"')
    try:
        psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g", source)
        server = (
            await client.post(
                "/api/v1/servers",
                json={
                    "name": "pg",
                    "type": "postgresql",
                    "host": "127.0.0.1",
                    "credentials": {"username": "postgres"},
                },
            )
        ).json()
        runner = client.app.state.ctx.runner  # type: ignore[attr-defined]
        accepted = (
            await client.post(
                "/api/v1/backups",
                json={
                    "server_id": server["id"],
                    "database_name": source,
                    "storage_id": provider["id"],
                },
            )
        ).json()
        job = await runner.wait(accepted["job_id"], limit_seconds=120)
        assert job.status == "succeeded", job.error_message
        backup = (await client.get(f"/api/v1/backups/{accepted['id']}")).json()
        artifact = remote_dir / backup["storage_path"]
        assert artifact.exists() and Path(str(artifact) + ".manifest.json").exists()
        assert not list(remote_dir.rglob("*.partial"))

        restore = (
            await client.post(
                f"/api/v1/backups/{backup['id']}/restore", json={"target_database": target}
            )
        ).json()
        job = await runner.wait(restore["job_id"], limit_seconds=120)
        assert job.status == "succeeded", job.error_message
        assert psql("SELECT sum(id) FROM t", target) == psql("SELECT sum(id) FROM t", source)
    finally:
        for name in (source, target):
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
