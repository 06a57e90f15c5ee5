"""Events to 1,000 WebSocket clients, across two real server processes.

Goal (issue #23): one event reaches all 1,000 clients subscribed to `backups` with p99
under 200 ms, also when it is raised in another process; the servers' memory stays flat.

Two `opscenter serve` processes (A and B) on a fresh PostgreSQL metadata database, events
relayed between them by Redis pub/sub and then by PostgreSQL LISTEN/NOTIFY. A separate
client process holds `--clients` WebSocket connections to A (bare asyncio protocols, so
the client's own cost stays small), each subscribed to `backups`. Real backups of a small
directory of a local files server are then made through A's API and through B's, one at a
time: each raises its job's and its backup's events (started, progress, completed...) in
the process that runs it. Latency = the client's receipt minus the event's own timestamp
(one host, one clock), per event and client. Prints p50/p99 per case against the goal,
with the ratio, per event type, and the servers' resident memory (now and peak).

    .venv/bin/python bench/events.py [--clients 1000] [--backups 20] [--relays redis postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from common import load_line

LIMIT = 0.200
PASSWORD = "bench-password-1"
PG = "postgres@127.0.0.1:5432"
CONNECTING_AT_ONCE = 50


# -- the client process ---------------------------------------------------------------------
class Client(asyncio.Protocol):
    """One WebSocket client on a bare asyncio protocol: the client process must not be what
    is measured (a full client library spends more per message than the server does).
    Answers the server's pings; keeps each text frame with the time its bytes arrived."""

    def __init__(self, received: list[tuple[float, bytes]]) -> None:
        self.received = received
        self.buffer = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.recording = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        arrival = time.time()
        self.buffer += data
        if not self.upgraded.done():
            head, sep, self.buffer = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                self.buffer = head
                return
            self.upgraded.set_result(head.split(b"\r\n", 1)[0])
        while len(self.buffer) >= 2:
            opcode, length, start = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if length >= 126:
                size = 2 if length == 126 else 8
                if len(self.buffer) < 2 + size:
                    return
                length, start = int.from_bytes(self.buffer[2 : 2 + size]), 2 + size
            if len(self.buffer) < start + length:
                return
            payload, self.buffer = (
                self.buffer[start : start + length],
                self.buffer[start + length :],
            )
            if opcode == 0x9:  # ping
                self.send(0xA, payload)
            elif opcode == 0x1:
                if self.recording:
                    self.received.append((arrival, payload))
                else:
                    self.frames.put_nowait(payload)

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


async def hold_clients(host: str, port: int, path: str, count: int) -> dict[str, Any]:
    """`count` clients subscribed to `backups`; prints `ready`, records every message until
    a line on stdin; each event's latencies, and how many connections were lost."""
    received: list[tuple[float, bytes]] = []
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    loop = asyncio.get_running_loop()

    async def subscribed() -> Client:
        async with gate:
            transport, client = await loop.create_connection(lambda: Client(received), host, port)
            key = base64.b64encode(os.urandom(16)).decode()
            transport.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            status = await asyncio.wait_for(client.upgraded, 120)
            assert status.startswith(b"HTTP/1.1 101"), status
            assert json.loads(await client.frames.get())["type"] == "connected"
            client.send(0x1, json.dumps({"type": "subscribe", "channels": ["backups"]}).encode())
            assert json.loads(await client.frames.get())["type"] == "subscribed"
            client.recording = True
            return client

    clients = await asyncio.gather(*(subscribed() for _ in range(count)))
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    lost = sum(client.transport.is_closing() for client in clients)
    for client in clients:
        client.transport.close()

    latencies: dict[str, list[float]] = {}
    for arrival, payload in received:
        message = json.loads(payload)
        if "timestamp" not in message:
            continue  # ping, pong
        data = message["data"]
        key = (
            f"{data.get('backup_id')} {message['type']}.{message['action']} {message['timestamp']}"
        )
        sent = datetime.fromisoformat(message["timestamp"]).timestamp()
        latencies.setdefault(key, []).append(arrival - sent)
    return {"latencies": latencies, "lost": lost}


# -- the servers ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A real `opscenter serve` process on a free loopback port."""

    def __init__(self, name: str, data_dir: Path, **env: str) -> None:
        self.name = name
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "OPSCENTER_DATA_DIR": str(data_dir),
            "OPSCENTER_PORT": str(self.port),
            "OPSCENTER_ADMIN_PASSWORD": PASSWORD,
            "OPSCENTER_RATE_LIMIT_ENABLED": "false",
            "OPSCENTER_HEALTH_INTERVAL": "0",
            "OPSCENTER_RESOURCES_INTERVAL": "0",
            "OPSCENTER_LOG_LEVEL": "WARNING",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opscenter", "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server {name} did not start")

    def memory_mb(self, field: str) -> float:
        """VmRSS (now) or VmHWM (the peak) of the server process, in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(field)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    name = f"oc_bench_{uuid.uuid4().hex[:10]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qAt", "-c"]
    subprocess.run([*psql, f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
    try:
        yield f"postgresql+asyncpg://{PG}/{name}"
    finally:
        subprocess.run([*psql, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=True)


def api(server: Server) -> httpx.Client:
    token = httpx.post(
        f"{server.base}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
    ).json()["access_token"]
    return httpx.Client(
        base_url=server.base, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def backup(client: httpx.Client, server_id: int, source: Path) -> int:
    """One real backup through this process's API, waited for; its id."""
    r = client.post("/api/v1/backups", json={"server_id": server_id, "source_path": str(source)})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    for _ in range(600):
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            assert job["status"] == "succeeded", job
            return int(r.json()["id"])
        time.sleep(0.05)
    raise TimeoutError(f"backup job {job_id} did not end")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(relay: str, clients: int, backups: int, gap: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        root = Path(tmp)
        source = root / "source"
        source.mkdir()
        (source / "notes.txt").write_text("a small directory: the events are measured\n")
        env = {
            "DATABASE_URL": url,
            "OPSCENTER_EVENT_BUS": relay,
            "OPSCENTER_REDIS_URL": "redis://127.0.0.1:6379/0",
        }
        a = Server("A", root / "data", **env)  # first: it migrates
        b = Server("B", root / "data", **env)  # one data dir: one installation's keys
        holder: subprocess.Popen[str] | None = None
        try:
            with api(a) as on_a, api(b) as on_b:
                r = on_a.post(
                    "/api/v1/servers",
                    json={"name": "bench-files", "type": "local", "paths": [str(source)]},
                )
                assert r.status_code == 201, r.text
                server_id = r.json()["id"]
                token = on_a.headers["Authorization"].removeprefix("Bearer ")
                idle = {s.name: s.memory_mb("VmRSS") for s in (a, b)}
                holder = subprocess.Popen(
                    [sys.executable, __file__, "--hold", str(a.port)],
                    env={
                        **os.environ,
                        "BENCH_WS_TOKEN": token,
                        "BENCH_CLIENTS": str(clients),
                        "BENCH_RESULT": str(root / "latencies.json"),
                    },
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert holder.stdin is not None and holder.stdout is not None
                assert holder.stdout.readline().strip() == "ready", "clients did not connect"
                connected = {s.name: s.memory_mb("VmRSS") for s in (a, b)}
                origin: dict[str, str] = {}
                for name, client in (("A", on_a), ("B", on_b)):
                    for _ in range(backups):
                        origin[str(backup(client, server_id, source))] = name
                        time.sleep(gap)  # one backup's events, then the next's
                time.sleep(1)  # the last events' way to every client
                after = {s.name: s.memory_mb("VmRSS") for s in (a, b)}
                peak = {s.name: s.memory_mb("VmHWM") for s in (a, b)}
                holder.stdin.write("stop\n")
                holder.stdin.flush()
                assert holder.stdout.readline().strip() == "done"
                holder.wait(60)
                result: dict[str, Any] = json.loads((root / "latencies.json").read_text())
        finally:
            if holder is not None and holder.poll() is None:
                holder.kill()
            a.stop()
            b.stop()

    print(
        f"\nrelay {relay}: {clients} WebSocket clients on A subscribed to `backups`; {load_line()}"
    )
    by_case: dict[str, list[float]] = {"A": [], "B": []}
    by_type: dict[str, list[float]] = {}
    spreads: list[float] = []  # per event: its last client's receipt minus its first's
    events: Counter[str] = Counter()
    short = 0
    for key, values in result["latencies"].items():
        backup_id, kind, _ = key.split(" ")
        if backup_id not in origin:
            continue
        events[origin[backup_id]] += 1
        short += clients - len(values)
        by_case[origin[backup_id]].extend(values)
        by_type.setdefault(f"{kind} (on {origin[backup_id]})", []).extend(values)
        spreads.append(max(values) - min(values))

    def line(label: str, values: list[float], count: str) -> None:
        p50, p99 = pct(values, 0.5), pct(values, 0.99)
        print(
            f"  {label:<34} {count:>16}: p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms  "
            f"goal {LIMIT * 1000:.0f} ms  ratio p99/goal {p99 / LIMIT:5.2f}  "
            f"{'OK' if p99 <= LIMIT else 'OVER THE GOAL'}"
        )

    for name, label in (("A", "raised on A (same process)"), ("B", "raised on B (relayed)")):
        line(label, by_case[name], f"{events[name]} x {clients}")
    print("  by event, in the order a backup raises them:")
    for kind, values in sorted(by_type.items(), key=lambda item: statistics.median(item[1])):
        line("  " + kind, values, f"{len(values) // clients} x {clients}")
    print(
        f"  one event from its first client to its last: median "
        f"{statistics.median(spreads) * 1000:.1f} ms, max {max(spreads) * 1000:.1f} ms"
    )
    print(f"  deliveries missing: {short}; connections lost: {result['lost']}")
    for s in ("A", "B"):
        print(
            f"  server {s} RSS: idle {idle[s]:.0f} MB, clients connected {connected[s]:.0f} MB, "
            f"after the events {after[s]:.0f} MB, peak {peak[s]:.0f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--backups", type=int, default=20, help="per origin process")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between backups")
    parser.add_argument("--relays", nargs="+", default=["redis", "postgres"])
    parser.add_argument("--hold", metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # 1,000 sockets on each side, plus the database's and the relay's.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.hold:
        token = os.environ["BENCH_WS_TOKEN"]  # not in argv: the process list is public
        clients, result = int(os.environ["BENCH_CLIENTS"]), Path(os.environ["BENCH_RESULT"])
        held = hold_clients("127.0.0.1", int(args.hold), f"/ws?token={token}", clients)
        result.write_text(json.dumps(asyncio.run(held)))
        print("done", flush=True)
        return
    for relay in args.relays:
        run(relay, args.clients, args.backups, args.gap)


if __name__ == "__main__":
    main()
