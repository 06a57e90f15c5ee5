"""The server process is SIGKILLed mid-backup and started again: the job and the backup
end `interrupted`, the partial file is removed, and older backups are untouched."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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
