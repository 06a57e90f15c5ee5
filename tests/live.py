"""A real `opscenter serve` process on a free loopback port, for tests that need one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_PASSWORD


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(data_dir: Path, **env: str) -> dict[str, str]:
    values = {
        **os.environ,
        "OPSCENTER_DATA_DIR": str(data_dir),
        "OPSCENTER_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "OPSCENTER_HEALTH_INTERVAL": "0",
        "OPSCENTER_DB_POOL_TIMEOUT": "30",
        "OPSCENTER_RESOURCES_INTERVAL": "0",
        "OPSCENTER_RATE_LIMIT_ENABLED": "false",
        "OPSCENTER_LOG_LEVEL": "WARNING",
    }
    values.pop("DATABASE_URL", None)
    values.update(env)
    return values


def wait_job(c: httpx.Client, job_id: int, until: set[str], seconds: float = 60) -> dict[str, Any]:
    """Poll a live server's job until its status is one of `until`."""
    deadline = time.monotonic() + seconds
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = c.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {until}: {job}")


class LiveServer:
    def __init__(self, data_dir: Path, log: Path | None = None, **env: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = _env(data_dir, OPSCENTER_PORT=str(self.port), **env)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = _spawn("serve", self.env, self.log)
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
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # a connection held the graceful shutdown
                self.kill()

    def client(self) -> httpx.Client:
        token = httpx.post(
            f"{self.base}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


class LiveWorker:
    """A real `opscenter worker` process (scale-out: OPSCENTER_JOB_ENGINE=procrastinate)."""

    def __init__(self, data_dir: Path, log: Path | None = None, **env: str) -> None:
        self.env = _env(data_dir, **env)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = _spawn("worker", self.env, self.log)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and its tools: a lost machine
        self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, and the exit code once it left."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


def _spawn(command: str, env: dict[str, str], log: Path | None) -> subprocess.Popen[bytes]:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "opscenter", command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
