"""A new notification is pushed on the `notifications` WebSocket channel of its user, and
of no one else, by a real server process."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_PASSWORD
from tests.live import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("notify-ws"))
    srv.start()
    yield srv
    srv.stop()


def login(server: LiveServer, username: str, password: str) -> str:
    r = httpx.post(
        f"{server.base}/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


async def messages(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Everything but keep-alives received within `seconds`."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while (left := until - loop.time()) > 0:
        try:
            msg = json.loads(await asyncio.wait_for(ws.recv(), left))
        except TimeoutError:
            break
        if msg.get("type") != "ping":
            seen.append(msg)
    return seen


async def test_notification_reaches_only_its_user(server: LiveServer, tmp_path: Path) -> None:
    admin_token = login(server, "admin", ADMIN_PASSWORD)
    headers = {"Authorization": f"Bearer {admin_token}"}
    users: dict[str, str] = {}
    with httpx.Client(base_url=server.base, headers=headers) as c:
        team = c.post("/api/v1/users/teams", json={"name": f"t-{uuid.uuid4().hex[:6]}"}).json()
        for name in ("alice", "bob"):
            r = c.post(
                "/api/v1/users",
                json={
                    "username": name,
                    "email": f"{name}@example.com",
                    "password": f"{name}-password-123",
                    "role": "viewer",
                    "team_ids": [team["id"]],
                },
            )
            assert r.status_code == 201, r.text
            users[name] = login(server, name, f"{name}-password-123")
        db_server = c.post(
            "/api/v1/servers",
            json={
                "name": "down",
                "type": "postgresql",
                "host": "127.0.0.1",
                "port": 1,  # nothing listens: the health check fails
                "team_id": team["id"],
            },
        ).json()

    url = server.base.replace("http://", "ws://") + "/ws?token="
    async with (
        connect(url + users["alice"]) as alice,
        connect(url + users["bob"]) as bob,
        connect(url + admin_token) as admin,
    ):
        for ws in (alice, bob, admin):
            assert json.loads(await ws.recv())["type"] == "connected"
            await ws.send(json.dumps({"type": "subscribe", "channels": ["notifications"]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
        with httpx.Client(base_url=server.base, headers=headers) as c:
            r = c.post(f"/api/v1/servers/{db_server['id']}/test-connection")
            assert r.status_code == 200, r.text
        got = {
            name: await messages(ws, 3)
            for name, ws in (("alice", alice), ("bob", bob), ("admin", admin))
        }

    assert got["admin"] == []  # not a member of the team: no notification of theirs
    for name in ("alice", "bob"):
        [push] = got[name]
        assert push["type"] == "notification" and push["level"] == "error"
        assert "unhealthy" in push["message"]
        assert push["details"]["server_id"] == db_server["id"]
        # The pushed id is this user's own notification, and only theirs.
        with httpx.Client(
            base_url=server.base, headers={"Authorization": f"Bearer {users[name]}"}
        ) as c:
            own = c.get("/api/v1/notifications/").json()["items"]
        assert [n["id"] for n in own] == [push["id"]]
    assert got["alice"][0]["id"] != got["bob"][0]["id"]
