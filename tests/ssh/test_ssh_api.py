"""An SSH host as a server through the API: test-connection pins the host key, its
PostgreSQL is discovered and backed up by tools run there, a changed host key fails
closed until an admin resets the pin."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import admin_client, make_settings
from tests.helpers import psql
from tests.ssh.conftest import SshServer


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(make_settings(tmp_path)) as c:
        yield c


async def test_ssh_host_end_to_end(
    client: httpx.AsyncClient, make_sshd: Callable[[], SshServer], ssh_client_key: Path
) -> None:
    sshd = make_sshd()
    body: dict[str, Any] = {
        "name": f"ssh-{uuid.uuid4().hex[:6]}",
        "type": "ssh",
        "host": "127.0.0.1",
        "port": sshd.port,
        "credentials": {
            "username": getpass.getuser(),
            "ssh_key": ssh_client_key.read_text(),
            "db_username": "postgres",
        },
        "db_engine": "postgresql",
        "db_port": 5432,
    }
    r = await client.post("/api/v1/servers", json=body)
    assert r.status_code == 201, r.text
    server = r.json()
    assert server["credentials"]["has_ssh_key"] is True and server["ssh_host_key"] is None
    assert "PRIVATE KEY" not in r.text

    r = await client.post(f"/api/v1/servers/{server['id']}/test-connection")
    result = r.json()
    assert result["success"] is True, result
    assert result["host_key_fingerprint"] == sshd.host_fingerprint
    assert "PostgreSQL" in result["message"]
    pinned = (await client.get(f"/api/v1/servers/{server['id']}")).json()["ssh_host_key"]
    assert pinned == sshd.host_key_line

    source, target = f"oc_ssh_{uuid.uuid4().hex[:8]}", f"oc_ssh_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{source}"')
    try:
        psql(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g",
            source,
        )
        dbs = (await client.get(f"/api/v1/servers/{server['id']}/databases")).json()["databases"]
        assert source in {d["name"] for d in dbs}

        runner = client.app.state.ctx.runner  # type: ignore[attr-defined]
        accepted = (
            await client.post(
                "/api/v1/backups", json={"server_id": server["id"], "database_name": source}
            )
        ).json()
        job = await runner.wait(accepted["job_id"], limit_seconds=120)
        assert job.status == "succeeded", job.error_message
        backup = (await client.get(f"/api/v1/backups/{accepted['id']}")).json()
        assert backup["db_type"] == "postgresql"

        restore = (
            await client.post(
                f"/api/v1/backups/{backup['id']}/restore", json={"target_database": target}
            )
        ).json()
        job = await runner.wait(restore["job_id"], limit_seconds=120)
        assert job.status == "succeeded", job.error_message
        digest = "SELECT md5(string_agg(id || v, ',' ORDER BY id)) FROM t"
        assert psql(digest, target) == psql(digest, source)

        # the host's key changes: everything fails closed until the pin is reset
        sshd.stop()
        sshd.regenerate_host_key()
        sshd.start()
        result = (await client.post(f"/api/v1/servers/{server['id']}/test-connection")).json()
        assert result["success"] is False and "host key" in result["message"].lower(), result
        accepted = (
            await client.post(
                "/api/v1/backups", json={"server_id": server["id"], "database_name": source}
            )
        ).json()
        job = await runner.wait(accepted["job_id"], limit_seconds=120)
        assert job.status == "failed" and "host key" in (job.error_message or "").lower()

        r = await client.put(f"/api/v1/servers/{server['id']}", json={"reset_host_key": True})
        assert r.status_code == 200 and r.json()["ssh_host_key"] is None
        result = (await client.post(f"/api/v1/servers/{server['id']}/test-connection")).json()
        assert result["success"] is True and result["host_key_fingerprint"] == sshd.host_fingerprint
    finally:
        for name in (source, target):
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
