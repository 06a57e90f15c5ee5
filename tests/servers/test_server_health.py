"""The periodic health check updates status and heartbeat and publishes changes."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from opscenter.servers.health import check_all
from tests.conftest import Api

QUEUE = 100_000


async def test_health_round_updates_servers_and_publishes_changes(
    api: Api, admin: httpx.AsyncClient
) -> None:
    async def create(port: int) -> int:
        r = await admin.post(
            "/api/v1/servers",
            json={
                "name": f"h-{uuid.uuid4().hex[:6]}",
                "type": "postgresql",
                "host": "127.0.0.1",
                "port": port,
                "credentials": {"username": "postgres"},
            },
        )
        assert r.status_code == 201
        server_id: int = r.json()["id"]
        return server_id

    up, down = await create(5432), await create(1)
    ctx = api.app.state.ctx
    # A round checks every server of the app, the earlier tests' too: a queue of the
    # default size lost this test's own events once enough of those had changed.
    async with ctx.events.subscribe(QUEUE) as queue:
        await check_all(ctx)
        events = []
        while not queue.empty():
            events.append(queue.get_nowait())
    changed = {
        e.data["server_id"]: e.data["health_status"]
        for e in events
        if e.type == "server.health_changed"
    }
    assert changed.get(up) == "healthy" and changed.get(down) == "unhealthy"
    for server_id, status in ((up, "healthy"), (down, "unhealthy")):
        body = (await admin.get(f"/api/v1/servers/{server_id}")).json()
        assert body["health_status"] == status and body["last_heartbeat"] is not None

    # a second round with no change publishes nothing for these servers
    async with ctx.events.subscribe(QUEUE) as queue:
        await check_all(ctx)
        await asyncio.sleep(0)
        again = [queue.get_nowait() for _ in range(queue.qsize())]
    assert not [e for e in again if e.data.get("server_id") in (up, down)]
