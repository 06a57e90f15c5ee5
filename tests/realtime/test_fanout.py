"""Two real server processes on one PostgreSQL database: a WebSocket client connected to
one sees the events raised in the other, through Redis pub/sub or LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.core.helpers import fresh_database
from tests.live import LiveServer
from tests.realtime.test_websocket import login, recv, recv_until, ws_url


@pytest.fixture(params=["postgres", "redis"])
def two_servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[LiveServer]]:
    with fresh_database("postgres", tmp_path / "db") as url:
        env = {
            "DATABASE_URL": url,
            "OPSCENTER_EVENT_BUS": request.param,
            "OPSCENTER_REDIS_URL": "redis://127.0.0.1:6379/0",
        }
        # One data dir: the processes of one installation share its keys.
        servers = [LiveServer(tmp_path / "data", **env) for _ in range(2)]
        try:
            for server in servers:  # one after the other: the first one migrates
                server.start()
            yield servers
        finally:
            for server in servers:
                server.stop()


async def test_client_on_one_process_sees_events_of_the_other(
    two_servers: list[LiveServer], tmp_path: Path
) -> None:
    a, b = two_servers
    token = login(b)["access_token"]
    async with connect(ws_url(b, token)) as ws:
        assert (await recv(ws))["type"] == "connected"
        await ws.send(json.dumps({"type": "subscribe", "channels": ["servers"]}))
        assert (await recv(ws))["type"] == "subscribed"

        # The server's first health check happens on process A.
        with a.client() as api:
            created = api.post(
                "/api/v1/servers",
                json={"name": f"files-{uuid.uuid4().hex[:6]}", "type": "local"},
            )
            assert created.status_code == 201, created.text
            server_id = created.json()["id"]
            tested = api.post(f"/api/v1/servers/{server_id}/test-connection")
            assert tested.json()["success"] is True

        # Another test's processes may publish on the same Redis channel: wait for ours.
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            left = deadline - asyncio.get_running_loop().time()
            seen = await recv_until(ws, "server_health", seconds=left)
            if seen[-1]["server_id"] == server_id:
                break
        assert seen[-1]["health_status"] == "healthy"

    # And process B serves what A wrote: one installation.
    with b.client() as api:
        assert api.get(f"/api/v1/servers/{server_id}").json()["health_status"] == "healthy"
    assert httpx.get(f"{a.base}/health").status_code == 200
