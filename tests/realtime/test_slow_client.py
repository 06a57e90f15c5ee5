"""A WebSocket client that stops reading does not slow the others: a flood of events
(brought in over Redis, as from another server process) reaches a reading client in
full and on time while a stalled one holds its connection, and the stalled one is told
to reconnect (1013) once it reads again, since it lost events."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from opscenter.core.event_relay import CHANNEL
from tests.live import LiveServer
from tests.realtime.test_websocket import login, recv, ws_url

REDIS_URL = "redis://127.0.0.1:6379/0"
EVENTS = 3000
PADDING = "x" * 4000  # 3000 events of ~4 KB: 12 MB, far more than the stalled socket holds


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(
        tmp_path / "data",
        OPSCENTER_EVENT_BUS="redis",
        OPSCENTER_REDIS_URL=REDIS_URL,
        OPSCENTER_WS_KEEPALIVE="60",
    )
    srv.start()
    yield srv
    srv.stop()


class StalledClient:
    """A WebSocket client on a raw socket with a small receive buffer, so that it can
    really stop reading (a client library keeps reading into its own buffers, and the
    kernel's autotuning lets a loopback socket hold tens of MB)."""

    def __init__(self, server: LiveServer, token: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_text(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        assert len(payload) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed without a close frame")
            data += chunk
        return data

    def read_until_close(self) -> tuple[int, int]:
        """Read frames until the close frame: (text frames seen, close code)."""
        texts = 0
        while True:
            b0, b1 = self._exact(2)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._exact(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._exact(8))[0]
            payload = self._exact(length)
            if b0 & 0x0F == 0x8:
                return texts, struct.unpack("!H", payload[:2])[0]
            texts += 1


FLOOD_IDS = 10_000_000  # far above any server id of a concurrently running test


async def flood(count: int) -> float:
    """Publish like another busy server process would: 1000 events a second."""
    redis = Redis.from_url(REDIS_URL)
    t0 = time.monotonic()
    try:
        for i in range(count):
            event = {
                "origin": "another-process",
                "type": "server.health_changed",
                "data": {
                    "server_id": FLOOD_IDS + i,
                    "health_status": "healthy",
                    "padding": PADDING,
                },
                "team_id": None,
                "timestamp": "2026-11-25T00:00:00Z",
            }
            await redis.publish(CHANNEL, json.dumps(event))
            if i % 50 == 49:
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    return time.monotonic() - t0


async def test_a_stalled_client_does_not_slow_a_reading_one(server: LiveServer) -> None:
    token = login(server)["access_token"]
    stalled = StalledClient(server, token)
    try:
        await _flood_and_check(server, token, stalled)
    finally:
        stalled.sock.close()  # an open stalled socket would hold the server's shutdown


async def _flood_and_check(server: LiveServer, token: str, stalled: StalledClient) -> None:
    stalled.send_text(json.dumps({"type": "subscribe", "channels": ["servers"]}))
    async with connect(ws_url(server, token), max_size=None) as reader:
        assert (await recv(reader))["type"] == "connected"
        await reader.send(json.dumps({"type": "subscribe", "channels": ["servers"]}))
        assert (await recv(reader))["type"] == "subscribed"
        await asyncio.sleep(0.5)  # the relay's listener is subscribed well before this

        async def read_all() -> list[int]:
            seen: list[int] = []
            while len(seen) < EVENTS:
                msg = await recv(reader, 30)
                # Redis pub/sub is one namespace: another test's processes publish on it too.
                if msg.get("type") == "server_health" and msg["server_id"] >= FLOOD_IDS:
                    seen.append(msg["server_id"] - FLOOD_IDS)
            return seen

        t0 = time.monotonic()
        reading = asyncio.create_task(read_all())
        publish_seconds = await flood(EVENTS)
        seen = await reading
        received_seconds = time.monotonic() - t0
        # Everything, in order, and about as fast as it was published.
        assert seen == list(range(EVENTS))
        assert received_seconds < publish_seconds + 10, (received_seconds, publish_seconds)

        # The stalled client lost events while it did not read: when it reads again it
        # gets what was already on its way, then the close that says to reconnect.
        texts, code = await asyncio.to_thread(stalled.read_until_close)
        assert code == 1013
        assert texts < EVENTS  # it was cut off, not fed everything
