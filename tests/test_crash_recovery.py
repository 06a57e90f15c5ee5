"""The server process is SIGKILLed mid-backup and started again: the job and the backup
end `interrupted`, the partial file is removed, and older backups are untouched."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "OPSCENTER_DATA_DIR": str(data_dir),
            "OPSCENTER_PORT": str(self.port),
            "OPSCENTER_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "OPSCENTER_HEALTH_INTERVAL": "0",
            "OPSCENTER_RATE_LIMIT_ENABLED": "false",
            "OPSCENTER_LOG_LEVEL": "WARNING",
        }
        self.env.pop("DATABASE_URL", None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opscenter", "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(150):
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its dump tools, no cleanup
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def client(self) -> httpx.Client:
        token = httpx.post(
            f"{self.base}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data")
    yield srv
    srv.stop()


def _wait_job(
    c: httpx.Client, job_id: int, until: set[str], seconds: float = 60
) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job: dict[str, object] = c.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {until}")


def test_killed_server_reconciles_on_restart(server: Server, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.txt").write_text("keep me")
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "sparse.bin", "wb") as fh:
        fh.truncate(256 * 1024**3)

    server.start()
    with server.client() as c:
        srv = c.post(
            "/api/v1/servers",
            json={"name": "files", "type": "local", "paths": [str(small), str(big)]},
        ).json()
        good = c.post(
            "/api/v1/backups", json={"server_id": srv["id"], "source_path": str(small)}
        ).json()
        assert _wait_job(c, good["job_id"], {"succeeded", "failed"})["status"] == "succeeded"
        good_key = c.get(f"/api/v1/backups/{good['id']}").json()["storage_path"]

        doomed = c.post(
            "/api/v1/backups", json={"server_id": srv["id"], "source_path": str(big)}
        ).json()
        job = _wait_job(c, doomed["job_id"], {"running"})
        deadline = time.monotonic() + 30
        while int(str(job["bytes_done"])) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            job = c.get(f"/api/v1/jobs/{doomed['job_id']}").json()

    storage = tmp_path / "data" / "backups"
    partials = [p for p in storage.rglob("*.partial")]
    server.kill()
    assert partials and all(p.exists() for p in partials), "a partial file should be on disk"

    server.start()
    with server.client() as c:
        job = c.get(f"/api/v1/jobs/{doomed['job_id']}").json()
        assert job["status"] == "interrupted" and job["error_code"] == "interrupted"
        backup = c.get(f"/api/v1/backups/{doomed['id']}").json()
        assert backup["status"] == "interrupted" and backup["storage_path"] is None
        assert not list(storage.rglob("*.partial"))
        kept = c.get(f"/api/v1/backups/{good['id']}").json()
        assert kept["status"] == "completed" and (storage / good_key).exists()
        log = c.get("/api/v1/audit/logs", params={"action": "backup.interrupted"}).json()
        assert [i for i in log["items"] if i["resource_id"] == str(doomed["id"])]
