"""The WebSocket stream against a running server, with a real WebSocket client: auth,
channels, live backup progress, team scope, ping, frame limit, revocation."""

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
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.conftest import ADMIN_PASSWORD
from tests.live import LiveServer

ALLOWED = "https://ops.example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(
        tmp_path_factory.mktemp("ws"), OPSCENTER_WS_KEEPALIVE="0.5", ALLOWED_ORIGINS=ALLOWED
    )
    srv.start()
    yield srv
    srv.stop()


def login(
    server: LiveServer, username: str = "admin", password: str = ADMIN_PASSWORD
) -> dict[str, Any]:
    r = httpx.post(
        f"{server.base}/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def ws_url(server: LiveServer, token: str | None = None) -> str:
    url = server.base.replace("http://", "ws://") + "/ws"
    return f"{url}?token={token}" if token else url


async def recv(ws: ClientConnection, seconds: float = 10) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), seconds))
    return data


async def recv_until(
    ws: ClientConnection, wanted: str, seconds: float = 30
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        msg = await recv(ws, deadline - asyncio.get_running_loop().time())
        seen.append(msg)
        if msg.get("type") == wanted or f"{msg.get('type')}.{msg.get('action')}" == wanted:
            return seen


async def test_live_backup_progress_and_team_scope(server: LiveServer, tmp_path: Path) -> None:
    admin = login(server)
    headers = {"Authorization": f"Bearer {admin['access_token']}"}
    with httpx.Client(base_url=server.base, headers=headers) as c:
        team = c.post("/api/v1/users/teams", json={"name": f"t-{uuid.uuid4().hex[:6]}"}).json()
        c.post(
            "/api/v1/users",
            json={
                "username": "outsider",
                "email": "o@example.com",
                "password": "outsider-password",
                "role": "operator",
                "team_ids": [team["id"]],
            },
        )
        data = tmp_path / "files"
        data.mkdir()
        (data / "a.bin").write_bytes(b"x" * 3_000_000)
        server_row = c.post(
            "/api/v1/servers", json={"name": "files", "type": "local", "paths": [str(data)]}
        ).json()
    outsider = login(server, "outsider", "outsider-password")

    async with (
        connect(ws_url(server, admin["access_token"])) as ws,
        connect(ws_url(server, outsider["access_token"])) as other,
    ):
        assert (await recv(ws))["type"] == "connected"
        assert (await recv(other))["type"] == "connected"
        for sock in (ws, other):
            await sock.send(json.dumps({"type": "subscribe", "channels": ["backups", "jobs"]}))
            assert (await recv(sock)) == {
                "type": "subscribed",
                "channels": ["backups", "jobs"],
                "subscriptions": ["backups", "jobs"],
            }
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv_until(ws, "pong"))[-1] == {"type": "pong"}

        with httpx.Client(base_url=server.base, headers=headers) as c:
            accepted = c.post(
                "/api/v1/backups", json={"server_id": server_row["id"], "source_path": str(data)}
            ).json()
        seen = await recv_until(ws, "backup.completed")
        completed = seen[-1]
        assert completed["data"]["backup_id"] == accepted["id"] and "timestamp" in completed
        progress = [m for m in seen if m["type"] == "backup_progress"]
        assert progress and all(m["backup_id"] == accepted["id"] for m in progress)
        assert {"type", "action", "data", "timestamp"} <= set(progress[0])
        # The dump's size is unknown until it ends: the source's size estimates it.
        estimated = [m for m in progress if m["data"].get("bytes_total")]
        assert estimated and estimated[0]["data"]["bytes_total"] >= 3_000_000, progress
        assert all(0 <= m["progress"] <= 100 for m in estimated), progress

        # the outsider's team does not own that backup: nothing of it reaches them
        leaked = []
        loop = asyncio.get_running_loop()
        until = loop.time() + 2
        while (left := until - loop.time()) > 0:
            try:
                msg = await recv(other, left)
            except TimeoutError:
                break
            if msg.get("type") != "ping":  # keep-alives are all it may get
                leaked.append(msg)
        assert leaked == []

        await ws.send(json.dumps({"type": "unsubscribe", "channels": ["jobs"]}))
        answer = (await recv_until(ws, "unsubscribed"))[-1]
        assert answer == {
            "type": "unsubscribed",
            "channels": ["jobs"],
            "subscriptions": ["backups"],
        }


async def test_first_message_auth_and_refusals(server: LiveServer) -> None:
    token = login(server)["access_token"]
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert (await recv(ws))["type"] == "connected"

    async with connect(ws_url(server, "not-a-token")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channels": ["backups"]}))
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    async with connect(ws_url(server, token), max_size=None) as ws:
        await recv(ws)
        await ws.send("x" * (70 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_cookie_session_only_from_our_own_or_allowed_origins(server: LiveServer) -> None:
    r = httpx.post(
        f"{server.base}/api/v1/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD},
    )
    cookie = {"Cookie": f"session_token={r.cookies['session_token']}"}
    for origin in ("https://evil.example.net", "null", server.base.replace("127.0.0.1", "x")):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server), additional_headers=cookie, origin=Origin(origin)):
                pass
        assert refused.value.response.status_code == 403, origin
    for origin in (server.base, ALLOWED, None):  # our own pages, ALLOWED_ORIGINS, no browser
        async with connect(
            ws_url(server), additional_headers=cookie, origin=Origin(origin) if origin else None
        ) as ws:
            assert (await recv(ws))["type"] == "connected", origin
    # A token in the URL is no ambient credential: any page may use the one it holds.
    token = login(server)["access_token"]
    async with connect(ws_url(server, token), origin=Origin("https://evil.example.net")) as ws:
        assert (await recv(ws))["type"] == "connected"


async def test_logout_closes_the_users_sockets(server: LiveServer) -> None:
    session = login(server)
    async with connect(ws_url(server, session["access_token"])) as ws:
        await recv(ws)
        r = httpx.post(
            f"{server.base}/api/v1/auth/logout",
            headers={"Authorization": f"Bearer {session['access_token']}"},
        )
        assert r.status_code == 204
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await recv(ws, 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_frames_go_uncompressed_though_the_client_offers_deflate(
    server: LiveServer,
) -> None:
    # Compressing each small event for each of a thousand clients cost the fan-out more
    # CPU than it saved (bench/events.py).
    token = login(server)["access_token"]
    async with connect(ws_url(server, token), compression="deflate") as ws:
        assert ws.request is not None and ws.response is not None
        assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert (await recv(ws))["type"] == "connected"
