"""One command fanned out to 20 SSH targets on loopback (20 sshd on distinct ports), against
the same fan-out with plain `ssh host cmd` run in parallel, in the same run. Goal: within
1.3x of plain ssh. Prints both medians, the limit and the ratio.

    .venv/bin/python bench/command_fanout.py [--targets 20] [--rounds 5]

Needs openssh-server (sshd) and the ssh client; runs as the current user.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import admin_client, running_app

LIMIT = 1.3
SCRIPT = "uname -a; hostname; echo fan-out"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True
    )


@contextlib.contextmanager
def sshds(root: Path, count: int, client_key: Path) -> Iterator[list[int]]:
    """`count` sshd processes on loopback, each on its own port and host key."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    procs, ports = [], []
    try:
        for i in range(count):
            d = root / f"sshd{i}"
            d.mkdir()
            _keygen(d / "host_key")
            (d / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
            port = _port()
            (d / "sshd_config").write_text(
                f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
                f"PidFile {d / 'pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
                "StrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\n"
                "UsePAM no\nLogLevel ERROR\nMaxStartups 100\nPrintMotd no\n"
            )
            procs.append(
                subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.DEVNULL
                )
            )
            ports.append(port)
        for port in ports:  # until each answers
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=0.5) as s,
                ):
                    if s.recv(4).startswith(b"SSH-"):
                        break
                time.sleep(0.05)
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(5)


async def plain_ssh(ports: list[int], key: Path) -> float:
    async def one(port: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            "ssh",
            "-i",
            str(key),
            "-p",
            str(port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"{getpass.getuser()}@127.0.0.1",
            SCRIPT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0, err

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in ports))
    return time.perf_counter() - started


async def main(targets: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        key = root / "id_ed25519"
        _keygen(key)
        with sshds(root, targets, key) as ports:
            async with running_app() as app, admin_client(app) as c:
                ids = []
                for i, port in enumerate(ports):
                    r = await c.post(
                        "/api/v1/servers",
                        json={
                            "name": f"target-{i}",
                            "type": "ssh",
                            "host": "127.0.0.1",
                            "port": port,
                            "credentials": {
                                "username": getpass.getuser(),
                                "ssh_key": key.read_text(),
                            },
                        },
                    )
                    assert r.status_code == 201, r.text
                    ids.append(r.json()["id"])
                r = await c.post(
                    "/api/v1/commands", json={"name": "fan-out", "command_template": SCRIPT}
                )
                command_id = r.json()["id"]
                bus = app.state.ctx.events

                async def ours() -> float:
                    async with bus.subscribe() as queue:
                        started = time.perf_counter()
                        r = await c.post(
                            f"/api/v1/commands/{command_id}/execute", json={"server_ids": ids}
                        )
                        execution_id = r.json()["execution_id"]
                        while True:
                            event = await queue.get()
                            if event.data.get("execution_id") == execution_id and event.type in (
                                "command.completed",
                                "command.failed",
                            ):
                                break
                        elapsed = time.perf_counter() - started
                    e = (await c.get(f"/api/v1/commands/executions/{execution_id}")).json()
                    assert e["status"] == "completed", e
                    return elapsed

                await ours()  # warm-up: imports, first connections, host key pins
                await plain_ssh(ports, key)
                mine, plain = [], []
                for _ in range(rounds):  # interleaved, so drift hits both alike
                    mine.append(await ours())
                    plain.append(await plain_ssh(ports, key))
    m, p = statistics.median(mine), statistics.median(plain)
    print(f"{targets} SSH targets, {rounds} rounds, command: {SCRIPT!r}")
    print(f"plain ssh in parallel:        median {p * 1000:.0f} ms")
    print(f"opscenter execute (API->end): median {m * 1000:.0f} ms")
    print(
        f"ratio opscenter/plain ssh: {m / p:.2f} (limit {LIMIT}) "
        f"{'OK' if m / p <= LIMIT else 'OVER THE LIMIT'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.targets, args.rounds))
