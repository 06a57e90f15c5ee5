"""The server process is SIGKILLed mid-backup or mid-restore and started again: the job
and the backup end `interrupted`, the partial file is removed, and older backups are
untouched; a database a restore was creating is dropped, one it was overwriting is
reported damaged; no database password is left behind on disk."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backups.conftest import mysql, new_name
from tests.backups.helpers import pgrep
from tests.live import LiveServer, wait_job


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path / "data")
    yield srv
    srv.stop()


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
        assert wait_job(c, good["job_id"], {"succeeded", "failed"})["status"] == "succeeded"
        good_key = c.get(f"/api/v1/backups/{good['id']}").json()["storage_path"]

        doomed = c.post(
            "/api/v1/backups", json={"server_id": srv["id"], "source_path": str(big)}
        ).json()
        job = wait_job(c, doomed["job_id"], {"running"})
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
        assert not [p for p in partials if p.exists()]
        # Backups are safe to redo: a fresh attempt was queued. Stop it (it would run for
        # minutes); cancelling removes what it had written.
        retry = next(
            b
            for b in c.get("/api/v1/backups", params={"limit": 5}).json()["items"]
            if b["id"] > doomed["id"]
        )
        assert c.post(f"/api/v1/jobs/{retry['job_id']}/cancel").status_code in (200, 202)
        assert wait_job(c, retry["job_id"], {"cancelled", "failed"})["status"] == "cancelled"
        assert not list(storage.rglob("*.partial"))
        kept = c.get(f"/api/v1/backups/{good['id']}").json()
        assert kept["status"] == "completed" and (storage / good_key).exists()
        log = c.get("/api/v1/audit/logs", params={"action": "backup.interrupted"}).json()
        assert [i for i in log["items"] if i["resource_id"] == str(doomed["id"])]


@pytest.fixture
def my_names() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        mysql(None, f"DROP DATABASE IF EXISTS `{name}`", check=False)


def test_killed_mysql_restores_are_reconciled(server: LiveServer, my_names: list[str]) -> None:
    src, over, fresh = new_name(), new_name(), new_name()
    my_names += [src, over, fresh]
    md5s = ", ".join(["MD5(RAND())"] * 40)
    mysql(None, f"CREATE DATABASE `{src}`; CREATE DATABASE `{over}`")
    mysql(  # ~25 MB of dump: each restore takes a few seconds to write
        src,
        "CREATE TABLE a (id INT PRIMARY KEY, v LONGTEXT); "
        f"INSERT INTO a SELECT seq, CONCAT({md5s}) FROM seq_1_to_10000; "
        "CREATE TABLE b AS SELECT * FROM a;",
    )
    mysql(over, "CREATE TABLE old (i INT); INSERT INTO old VALUES (1)")

    server.start()
    with server.client() as c:
        srv = c.post(
            "/api/v1/servers",
            json={
                "name": "maria",
                "type": "mysql",
                "host": "127.0.0.1",
                "port": 3306,
                "credentials": {"username": "root"},
            },
        ).json()
        backup = c.post("/api/v1/backups", json={"server_id": srv["id"], "database_name": src})
        job = wait_job(c, backup.json()["job_id"], {"succeeded", "failed"}, 120)
        assert job["status"] == "succeeded", job
        jobs = {}
        for name, body in ((over, {"drop_existing": True}), (fresh, {})):
            r = c.post(
                f"/api/v1/backups/{backup.json()['id']}/restore",
                json={"target_database": name, **body},
            )
            assert r.status_code == 202, r.text
            jobs[name] = r.json()["job_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both write, and `a` is being filled
            phases = {c.get(f"/api/v1/jobs/{j}").json()["phase"] for j in jobs.values()}
            tables = mysql(  # not `a` itself: the dump holds it locked while filling it
                None,
                "SELECT COUNT(*) FROM information_schema.TABLES "
                f"WHERE TABLE_SCHEMA = '{over}' AND TABLE_NAME = 'a'",
            )
            if phases == {"writing the target"} and tables == "1":
                break
            time.sleep(0.02)
    server.kill()
    assert mysql(None, f"SHOW DATABASES LIKE '{fresh}'") == fresh
    assert mysql(over, "SHOW TABLES LIKE 'b'") == "", "killed too late"

    server.start()
    with server.client() as c:
        damaged = c.get(f"/api/v1/jobs/{jobs[over]}").json()
        assert damaged["status"] == "interrupted"
        assert f"{over} on maria was left partly restored" in damaged["error_message"]
        created = c.get(f"/api/v1/jobs/{jobs[fresh]}").json()
        assert created["status"] == "interrupted" and "was dropped" in created["error_message"]
        assert mysql(None, f"SHOW DATABASES LIKE '{fresh}'") == ""
        for action, name in (("restore.target_damaged", over), ("restore.cleanup", fresh)):
            log = c.get("/api/v1/audit/logs", params={"action": action}).json()
            assert [i for i in log["items"] if i["details"]["target_database"] == name], action


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
            wait_job(c, backup["job_id"], {"running"})
            # The job's client (probes first, then row counts and the dump) blocks on the
            # lock: wait until one of its connections does, then find that client.
            waiting = (
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                f"WHERE USER = '{user}' AND STATE LIKE 'Waiting for table%'"
            )
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
