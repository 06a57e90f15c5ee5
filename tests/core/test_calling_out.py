"""Routes that call out (network, subprocess) hold no transaction while they wait.

On SQLite a write transaction holds the database's one write lock: a probe of a host that
accepts the connection and never answers would stall every other writer and every job
heartbeat for as long as it waits. Here it is pending while another user writes and a
running job's heartbeat goes through, each within a small bound."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from opscenter.core.clock import utcnow
from opscenter.models import Job
from opscenter.streaming.manifest import manifest_key
from tests.conftest import Api, UserFactory

WITHIN_SECONDS = 2.0


class SilentHost:
    """A loopback listener that accepts connections and never answers, until `hang_up`."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = asyncio.Event()
        self._open: list[asyncio.StreamWriter] = []
        self._hung_up = False

    async def _on_connect(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._hung_up:
            writer.close()
            return
        self._open.append(writer)
        self.accepted.set()

    def hang_up(self) -> None:
        """Close every connection, and each new one at once: the probe fails fast."""
        self._hung_up = True
        for writer in self._open:
            writer.close()


@contextlib.asynccontextmanager
async def silent_host() -> AsyncIterator[SilentHost]:
    host = SilentHost()
    server = await asyncio.start_server(host._on_connect, "127.0.0.1", 0)
    host.port = server.sockets[0].getsockname()[1]
    try:
        yield host
    finally:
        host.hang_up()
        server.close()


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def server_body(port: int, team_id: int) -> dict[str, Any]:
    return {
        "name": uid("silent-"),
        "type": "postgresql",
        "host": "127.0.0.1",
        "port": port,
        "credentials": {"username": "postgres", "password": "not-used"},
        "team_id": team_id,
    }


#: The URL to post to, its body, and the status once the host hung up.
Request = tuple[str, dict[str, Any], int]
Setup = Callable[[Api, httpx.AsyncClient, int, int], Awaitable[Request]]


async def saved_server(_api: Api, admin: httpx.AsyncClient, port: int, team_id: int) -> Request:
    r = await admin.post("/api/v1/servers", json=server_body(port, team_id))
    assert r.status_code == 201, r.text
    return f"/api/v1/servers/{r.json()['id']}/test-connection", {}, 200


async def unsaved_server(_api: Api, _admin: httpx.AsyncClient, port: int, team_id: int) -> Request:
    return "/api/v1/servers/test-connection", server_body(port, team_id), 200


async def sftp_storage(_api: Api, _admin: httpx.AsyncClient, port: int, _team_id: int) -> Request:
    config = {"host": "127.0.0.1", "port": port, "username": "backup", "path": "/backups"}
    provider = {
        "name": uid("sftp-"),
        "type": "sftp",
        "config": config,
        "credentials": {"password": "not-used"},
    }
    return "/api/v1/storage/test", {"provider": provider}, 200


async def webhook_channel(_api: Api, admin: httpx.AsyncClient, port: int, team_id: int) -> Request:
    r = await admin.post(
        "/api/v1/notifications/channels",
        json={
            "name": uid("hook-"),
            "type": "webhook",
            "config": {"url": f"http://127.0.0.1:{port}/hook"},
            "team_id": team_id,
        },
    )
    assert r.status_code == 201, r.text
    body = {"channel_id": r.json()["id"], "message": "hello"}
    return "/api/v1/notifications/test", body, 200


async def webhook_integration(
    _api: Api, admin: httpx.AsyncClient, port: int, _team_id: int
) -> Request:
    r = await admin.post(
        "/api/v1/integrations/",
        json={
            "name": uid("hook-"),
            "type": "webhook",
            "config": {"url": f"http://127.0.0.1:{port}/hook", "events": ["job.*"]},
        },
    )
    assert r.status_code == 201, r.text
    return f"/api/v1/integrations/{r.json()['id']}/test", {}, 200


async def backup_of_postgres(api: Api, admin: httpx.AsyncClient) -> dict[str, Any]:
    """A completed backup of the (small) `postgres` database, into the default storage."""
    r = await admin.post("/api/v1/servers", json={**server_body(5432, 0), "team_id": None})
    assert r.status_code == 201, r.text
    r = await admin.post(
        "/api/v1/backups", json={"server_id": r.json()["id"], "database_name": "postgres"}
    )
    assert r.status_code == 202, r.text
    job = await api.app.state.ctx.runner.wait(r.json()["job_id"], limit_seconds=60)
    assert job.status == "succeeded", job.error_message
    backup: dict[str, Any] = (await admin.get(f"/api/v1/backups/{r.json()['id']}")).json()
    return backup


async def restore_probe(api: Api, admin: httpx.AsyncClient, port: int, _team_id: int) -> Request:
    """A restore looks at its target database first; the answer is a 409 once it failed."""
    backup = await backup_of_postgres(api, admin)
    target = await admin.post("/api/v1/servers", json={**server_body(port, 0), "team_id": None})
    assert target.status_code == 201, target.text
    body = {"target_server_id": target.json()["id"], "target_database": "oc_never_restored"}
    return f"/api/v1/backups/{backup['id']}/restore", body, 409


@contextlib.asynccontextmanager
async def running_job(api: Api, team_id: int) -> AsyncIterator[int]:
    """A job row as the runner keeps it while it runs (heartbeats), ended afterwards so
    that no later test finds it busy."""
    runner = api.app.state.ctx.runner
    async with api.app.state.ctx.db.write_session() as session:
        job = Job(
            kind="verify",
            team_id=team_id,
            lock_key=None,
            resource_type="team",
            resource_id=team_id,
            params={},
            status="running",
        )
        session.add(job)
        await session.commit()
    try:
        yield job.id
    finally:
        await runner.write(job.id, status="succeeded", finished_at=utcnow())


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize(
    "setup",
    [
        saved_server,
        unsaved_server,
        sftp_storage,
        webhook_channel,
        webhook_integration,
        restore_probe,
    ],
    ids=lambda f: f.__name__,
)
async def test_a_silent_host_blocks_no_writer(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, setup: Setup
) -> None:
    other = await make_user("admin")
    r = await admin.post("/api/v1/users/teams", json={"name": uid("team-")})
    assert r.status_code == 201, r.text
    team_id = r.json()["id"]

    async with (
        running_job(api, team_id) as job_id,
        silent_host() as host,
        other.client(api) as other_client,
    ):
        url, body, status = await setup(api, admin, host.port, team_id)
        probe = asyncio.create_task(admin.post(url, json=body))
        try:
            await asyncio.wait_for(host.accepted.wait(), 15)
            write = other_client.post("/api/v1/users/teams", json={"name": uid("team-")})
            r = await asyncio.wait_for(write, WITHIN_SECONDS)
            assert r.status_code == 201, r.text
            heartbeat = api.app.state.ctx.runner.write(job_id, heartbeat_at=utcnow())
            await asyncio.wait_for(heartbeat, WITHIN_SECONDS)
            assert not probe.done(), "the probe must still be waiting on the silent host"
        finally:
            host.hang_up()
        r = await asyncio.wait_for(probe, 30)
    assert r.status_code == status, r.text
    result = r.json()
    assert not result.get("success", result.get("delivered")), result


async def test_an_upload_at_the_clients_pace_blocks_no_writer(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    backup = await backup_of_postgres(api, admin)
    stored = api.settings.data_dir / "backups" / backup["storage_path"]
    artifact = stored.read_bytes()
    manifest = Path(manifest_key(str(stored))).read_bytes()
    r = await admin.post(
        "/api/v1/storage/providers",
        json={"name": uid("elsewhere-"), "type": "local", "config": {"path": str(tmp_path)}},
    )
    assert r.status_code == 201, r.text
    storage_id = r.json()["id"]
    other = await make_user("admin")
    half_sent, rest = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield artifact[:100]
        half_sent.set()
        await rest.wait()
        yield artifact[100:]

    upload = asyncio.create_task(
        admin.post(
            "/api/v1/backups/import",
            params={"storage_id": storage_id},
            content=slow_body(),
            headers={
                "X-Backup-Manifest": base64.b64encode(manifest).decode(),
                "Content-Type": "application/octet-stream",
            },
        )
    )
    async with other.client(api) as other_client:
        try:
            await asyncio.wait_for(half_sent.wait(), 15)
            write = other_client.post("/api/v1/users/teams", json={"name": uid("team-")})
            r = await asyncio.wait_for(write, WITHIN_SECONDS)
            assert r.status_code == 201, r.text
            assert not upload.done()
        finally:
            rest.set()
    r = await asyncio.wait_for(upload, 30)
    assert r.status_code == 201, r.text
    assert r.json()["checksum"] == backup["checksum"] and r.json()["storage_id"] == storage_id


async def test_a_server_edited_while_it_is_tested_keeps_its_health(
    api: Api, admin: httpx.AsyncClient
) -> None:
    """The probe's outcome is about the old address: it is not recorded on the new one."""
    async with silent_host() as host:
        r = await admin.post("/api/v1/servers", json={**server_body(host.port, 0), "team_id": None})
        assert r.status_code == 201, r.text
        server = r.json()
        probe = asyncio.create_task(admin.post(f"/api/v1/servers/{server['id']}/test-connection"))
        await asyncio.wait_for(host.accepted.wait(), 15)
        r = await admin.put(f"/api/v1/servers/{server['id']}", json={"port": 5432})
        assert r.status_code == 200, r.text
        host.hang_up()
        r = await asyncio.wait_for(probe, 30)
    assert r.status_code == 200 and r.json()["success"] is False, r.text
    now = (await admin.get(f"/api/v1/servers/{server['id']}")).json()
    assert now["port"] == 5432 and now["health_status"] == "unknown", now
