"""The server process is SIGKILLed mid-backup and started again: the job and the backup
end `interrupted`, the partial file is removed, and older backups are untouched; no
database password is left behind on disk."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backups.conftest import mysql
from tests.backups.helpers import pgrep
from tests.live import LiveServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path / "data")
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


def test_killed_server_reconciles_on_restart(server: LiveServer, tmp_path: Path) -> None:
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


def test_a_killed_server_leaves_no_database_password_on_disk(tmp_path: Path) -> None:
    """kill -9 during a MariaDB dump: the client's password never sat in a file that
    outlives the process (it reaches the tools as an inherited descriptor)."""
    db, user = f"oc_crash_{uuid.uuid4().hex[:8]}", f"oc_u{uuid.uuid4().hex[:8]}"
    password = f"crash-secret-{uuid.uuid4().hex}"
    mysql(
        None,
        f"CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (i INT); INSERT INTO `{db}`.t VALUES (1)",
    )
    mysql(None, f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'")
    mysql(None, f"GRANT ALL ON `{db}`.* TO '{user}'@'127.0.0.1'")
    # A write lock held elsewhere keeps the dump waiting on the table, mid-job.
    locker = subprocess.Popen(
        [
            "mariadb",
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "-e",
            f"LOCK TABLES `{db}`.t WRITE; SELECT SLEEP(60)",
        ]
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = LiveServer(tmp_path / "data", TMPDIR=str(temp))
    try:
        server.start()
        with server.client() as c:
            srv = c.post(
                "/api/v1/servers",
                json={
                    "name": "maria",
                    "type": "mysql",
                    "host": "127.0.0.1",
                    "credentials": {"username": user, "password": password},
                },
            ).json()
            backup = c.post(
                "/api/v1/backups", json={"server_id": srv["id"], "database_name": db}
            ).json()
            _wait_job(c, backup["job_id"], {"running"})
            waiting = f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
            deadline = time.monotonic() + 30
            while mysql(None, waiting) == "0" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert pgrep(f"defaults-extra-file.*{db}"), "a client should be waiting on the lock"
        server.kill()
        leftovers = [
            p for p in temp.rglob("*") if p.is_file() and password in p.read_text("latin-1")
        ]
        assert leftovers == []
    finally:
        server.stop()
        locker.kill()
        mysql(None, f"DROP DATABASE IF EXISTS `{db}`; DROP USER IF EXISTS '{user}'@'127.0.0.1'")
