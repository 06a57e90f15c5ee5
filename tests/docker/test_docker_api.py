"""A `docker` server through the API: a container on this host and one on an SSH host,
its PostgreSQL (reachable only inside) and its files backed up by tools run in the
container, restored into the container and into another server, equal to the source;
bad input refused with nothing written."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opscenter.core.clock import utcnow
from opscenter.schedules.scheduler import Scheduler
from tests.conftest import admin_client, make_settings
from tests.ssh.conftest import SshServer

from ..backups.conftest import psql
from .conftest import MariaDbContainer, PgContainer

DIGEST = "SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(make_settings(tmp_path)) as c:
        yield c


async def _run(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(path, json=body)
    assert r.status_code == 202, r.text
    runner = client.app.state.ctx.runner  # type: ignore[attr-defined]
    job = await runner.wait(r.json()["job_id"], limit_seconds=120)
    assert job.status == "succeeded", job.error_message
    return dict(r.json())


def _docker_server(container: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"docker-{uuid.uuid4().hex[:6]}",
        "type": "docker",
        "container": container,
        "credentials": {"db_username": "postgres", "db_password": "in-container-pw"},
        "db_engine": "postgresql",
        "paths": ["/srv"],
        **extra,
    }


async def test_container_on_this_host_end_to_end(
    client: httpx.AsyncClient, pg_container: PgContainer
) -> None:
    r = await client.post("/api/v1/servers", json=_docker_server(pg_container.name))
    assert r.status_code == 201, r.text
    server = r.json()
    assert server["container"] == pg_container.name and server["host"] == ""
    assert "in-container-pw" not in r.text and server["credentials"]["has_db_password"]

    result = (await client.post(f"/api/v1/servers/{server['id']}/test-connection")).json()
    assert result["success"] is True, result
    assert f"container {pg_container.name}" in result["message"]
    assert "PostgreSQL 15" in result["message"]

    source, copy = f"oc_dk_{uuid.uuid4().hex[:8]}", f"oc_dk_{uuid.uuid4().hex[:8]}"
    pg_container.psql(f'CREATE DATABASE "{source}"')
    pg_container.psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 3000) g",
        source,
    )
    dbs = (await client.get(f"/api/v1/servers/{server['id']}/databases")).json()["databases"]
    assert source in {d["name"] for d in dbs}

    backup = await _run(
        client, "/api/v1/backups", {"server_id": server["id"], "database_name": source}
    )
    detail = (await client.get(f"/api/v1/backups/{backup['id']}")).json()
    assert detail["db_type"] == "postgresql" and detail["status"] == "completed"

    # into the container itself, under a new name
    await _run(client, f"/api/v1/backups/{backup['id']}/restore", {"target_database": copy})
    assert pg_container.psql(DIGEST, copy) == pg_container.psql(DIGEST, source)

    # into another server: this host's PostgreSQL
    r = await client.post(
        "/api/v1/servers",
        json={"name": f"pg-{uuid.uuid4().hex[:6]}", "type": "postgresql", "host": "127.0.0.1",
              "credentials": {"username": "postgres"}},
    )  # fmt: skip
    other = r.json()
    try:
        await _run(
            client,
            f"/api/v1/backups/{backup['id']}/restore",
            {"target_server_id": other["id"], "target_database": copy},
        )
        assert psql(copy, DIGEST) == pg_container.psql(DIGEST, source)
    finally:
        psql("postgres", f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')

    # a directory in the container, with modes and a symlink
    pg_container.sh(
        "mkdir -p /srv/data/sub && printf 'hello\\n' > /srv/data/a.txt && "
        "head -c 100000 /dev/urandom > /srv/data/sub/b.bin && chmod 640 /srv/data/a.txt && "
        "ln -s ../a.txt /srv/data/sub/link"
    )
    files = await _run(
        client, "/api/v1/backups", {"server_id": server["id"], "source_path": "/srv/data"}
    )
    await _run(
        client, f"/api/v1/backups/{files['id']}/restore", {"target_database": "/srv/restored"}
    )
    listing = (
        "cd {} && find . -printf '%p %m %y %l\\n' | sort && "
        "find . -type f -exec sha256sum {{}} + | sort"
    )
    assert (
        pg_container.sh(listing.format("/srv/restored")).stdout
        == pg_container.sh(listing.format("/srv/data")).stdout
    )


async def test_container_on_an_ssh_host(
    client: httpx.AsyncClient, pg_container: PgContainer, sshd: SshServer
) -> None:
    body = _docker_server(
        pg_container.name,
        host="127.0.0.1",
        port=sshd.port,
        credentials={
            "username": getpass.getuser(),
            "ssh_key": sshd.client_key.read_text(),
            "db_username": "postgres",
        },
    )
    r = await client.post("/api/v1/servers", json=body)
    assert r.status_code == 201, r.text
    server = r.json()
    assert "PRIVATE KEY" not in r.text

    result = (await client.post(f"/api/v1/servers/{server['id']}/test-connection")).json()
    assert result["success"] is True, result
    assert f"SSH {getpass.getuser()}@127.0.0.1, container" in result["message"]
    assert f"container {pg_container.name}" in result["message"]
    assert result["host_key_fingerprint"] == sshd.host_fingerprint
    pinned = (await client.get(f"/api/v1/servers/{server['id']}")).json()["ssh_host_key"]
    assert pinned == sshd.host_key_line

    source, copy = f"oc_dks_{uuid.uuid4().hex[:8]}", f"oc_dks_{uuid.uuid4().hex[:8]}"
    pg_container.psql(f'CREATE DATABASE "{source}"')
    pg_container.psql(
        "CREATE TABLE t AS SELECT g AS id, repeat(md5(g::text), 5) AS v "
        "FROM generate_series(1, 20000) g",
        source,
    )
    backup = await _run(
        client, "/api/v1/backups", {"server_id": server["id"], "database_name": source}
    )
    await _run(client, f"/api/v1/backups/{backup['id']}/restore", {"target_database": copy})
    assert pg_container.psql(DIGEST, copy) == pg_container.psql(DIGEST, source)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"type": "docker"}, "needs its container"),
        ({"type": "docker", "container": "-bad"}, "container"),
        ({"type": "docker", "container": "a b"}, "container"),
        ({"type": "docker", "container": "x" * 129}, "container"),
        ({"type": "docker", "container": "c", "ssh_host_key": "SHA256:abc"}, "ssh_host_key"),
        ({"type": "local", "container": "c"}, "container applies"),
        ({"type": "postgresql", "host": "127.0.0.1", "container": "c"}, "container applies"),
    ],
)
async def test_bad_docker_servers_are_refused(
    client: httpx.AsyncClient, body: dict[str, Any], says: str
) -> None:
    before = (await client.get("/api/v1/servers")).json()["total"]
    r = await client.post("/api/v1/servers", json={"name": f"bad-{uuid.uuid4().hex[:6]}", **body})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "VALIDATION_ERROR" and says in r.text
    assert (await client.get("/api/v1/servers")).json()["total"] == before


async def test_missing_container_fails_the_test_and_the_backup_clearly(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/api/v1/servers", json=_docker_server("oc-test-no-such-container"))
    server = r.json()
    result = (await client.post(f"/api/v1/servers/{server['id']}/test-connection")).json()
    assert result["success"] is False and result["code"] == "unreachable"
    assert "oc-test-no-such-container" in result["message"] and "running" in result["message"]
    assert "in-container-pw" not in str(result)

    r = await client.post(
        "/api/v1/backups", json={"server_id": server["id"], "database_name": "whatever"}
    )
    runner = client.app.state.ctx.runner  # type: ignore[attr-defined]
    job = await runner.wait(r.json()["job_id"], limit_seconds=60)
    assert job.status == "failed" and "running" in (job.error_message or "")
    backup = (await client.get(f"/api/v1/backups/{r.json()['id']}")).json()
    assert backup["status"] == "failed" and backup["storage_path"] is None

    # a container on a docker server can be changed; on another type it cannot
    r = await client.put(f"/api/v1/servers/{server['id']}", json={"container": "other.one"})
    assert r.status_code == 200 and r.json()["container"] == "other.one"
    r = await client.post(
        "/api/v1/servers", json={"name": f"l-{uuid.uuid4().hex[:6]}", "type": "local"}
    )
    r = await client.put(f"/api/v1/servers/{r.json()['id']}", json={"container": "x"})
    assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR"


async def test_scheduled_restore_tests_run_on_the_sandbox_server(
    client: httpx.AsyncClient, pg_container: PgContainer
) -> None:
    """The source is this host's PostgreSQL; the restore tests go to the container."""
    source = f"oc_sbx_{uuid.uuid4().hex[:8]}"
    psql("postgres", f'CREATE DATABASE "{source}"')
    try:
        psql(
            source,
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g",
        )
        pg = await client.post(
            "/api/v1/servers",
            json={"name": f"pg-{uuid.uuid4().hex[:6]}", "type": "postgresql",
                  "host": "127.0.0.1", "credentials": {"username": "postgres"}},
        )  # fmt: skip
        sandbox = (
            await client.post("/api/v1/servers", json=_docker_server(pg_container.name))
        ).json()
        mysql_box = await client.post(
            "/api/v1/servers",
            json={"name": f"my-{uuid.uuid4().hex[:6]}", "type": "mysql", "host": "127.0.0.1"},
        )
        base = {
            "name": f"sbx-{source}",
            "server_id": pg.json()["id"],
            "database_name": source,
            "cron_expression": "0 3 * * *",
            "restore_test_every_days": 7,
        }
        for bad, says in (
            (mysql_box.json()["id"], "cannot be restore-tested"),
            (999_999, "no such server"),
        ):
            r = await client.post("/api/v1/schedules", json={**base, "restore_test_server_id": bad})
            assert r.status_code == 422 and says in r.text, r.text
        assert (await client.get("/api/v1/schedules")).json()["total"] == 0

        r = await client.post(
            "/api/v1/schedules", json={**base, "restore_test_server_id": sandbox["id"]}
        )
        assert r.status_code == 201, r.text
        schedule = r.json()
        assert schedule["restore_test_server_id"] == sandbox["id"]
        r = await client.put(
            f"/api/v1/schedules/{schedule['id']}",
            json={"restore_test_server_id": mysql_box.json()["id"]},
        )
        assert r.status_code == 422, r.text
        shown = (await client.get(f"/api/v1/schedules/{schedule['id']}")).json()
        assert shown["restore_test_server_id"] == sandbox["id"]

        backup = await _run(client, f"/api/v1/schedules/{schedule['id']}/run", {})
        scheduler = Scheduler(client.app.state.ctx, interval_seconds=900)  # type: ignore[attr-defined]
        jobs = await scheduler.restore_test_pass(utcnow(), schedule_ids=[schedule["id"]])
        assert len(jobs) == 1
        runner = client.app.state.ctx.runner  # type: ignore[attr-defined]
        job = await runner.wait(jobs[0], limit_seconds=120)
        assert job.status == "succeeded", job.error_message
        runs = (await client.get("/api/v1/verify", params={"backup_id": backup["id"]})).json()
        (run,) = runs["items"]
        assert run["trigger"] == "scheduled" and run["target_server_id"] == sandbox["id"]
        result = (
            await client.get(f"/api/v1/verify/{backup['id']}/result", params={"run_id": run["id"]})
        ).json()
        assert result["status"] == "passed", result
        # the scratch database lived in the container, and is gone from it
        assert result["scratch_database"].startswith("oc_verify_")
        assert result["scratch_database"] not in pg_container.psql(
            "SELECT datname FROM pg_database"
        )

        # the sandbox cannot be deleted from under the schedule (its tests would move
        # onto the source server)
        r = await client.delete(f"/api/v1/servers/{sandbox['id']}")
        assert r.status_code == 409 and base["name"] in r.json()["detail"], r.text
        assert (await client.get(f"/api/v1/servers/{sandbox['id']}")).status_code == 200

        # an explicit null sends the tests back to the source server; then it can go
        r = await client.put(
            f"/api/v1/schedules/{schedule['id']}", json={"restore_test_server_id": None}
        )
        assert r.status_code == 200 and r.json()["restore_test_server_id"] is None, r.text
        assert (await client.delete(f"/api/v1/servers/{sandbox['id']}")).status_code == 204
    finally:
        psql("postgres", f'DROP DATABASE IF EXISTS "{source}" WITH (FORCE)')


async def test_mariadb_in_a_container(
    client: httpx.AsyncClient, mariadb_container: MariaDbContainer
) -> None:
    """Routines, triggers and utf8mb4 text, dumped by mariadb-dump in the container."""
    my = mariadb_container
    source, copy = f"oc_dkm_{uuid.uuid4().hex[:8]}", f"oc_dkm_{uuid.uuid4().hex[:8]}"
    my.sql(f"CREATE DATABASE {source} CHARACTER SET utf8mb4")
    my.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(100), n INT DEFAULT 0);"
        "CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, t_id INT);"
        "CREATE TRIGGER t_log AFTER INSERT ON t FOR EACH ROW "
        "INSERT INTO log (t_id) VALUES (NEW.id);"
        "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN 2 * x;"
        "INSERT INTO t (id, v) SELECT seq, CONCAT('zoë ☃ 😀 ', MD5(seq)) FROM seq_1_to_2000;",
        source,
    )
    r = await client.post(
        "/api/v1/servers",
        json={"name": f"dkm-{uuid.uuid4().hex[:6]}", "type": "docker", "container": my.name,
              "credentials": {"db_username": "root"}, "db_engine": "mysql"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    server = r.json()
    result = (await client.post(f"/api/v1/servers/{server['id']}/test-connection")).json()
    assert result["success"] is True and "MariaDB" in result["message"], result

    backup = await _run(
        client, "/api/v1/backups", {"server_id": server["id"], "database_name": source}
    )
    await _run(client, f"/api/v1/backups/{backup['id']}/restore", {"target_database": copy})
    digest = "SELECT MD5(GROUP_CONCAT(id, ':', v, ':', n ORDER BY id SEPARATOR ',')) FROM t"
    assert my.sql(digest, copy) == my.sql(digest, source) != ""
    assert my.sql("SELECT COUNT(*) FROM log", copy) == "2000"
    assert my.sql("SELECT twice(21)", copy) == "42"
    my.sql("INSERT INTO t (id, v) VALUES (5000, 'after')", copy)
    assert my.sql("SELECT COUNT(*) FROM log", copy) == "2001"  # the trigger came along
