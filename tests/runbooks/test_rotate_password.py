"""The built-in runbook "rotate a database user's password", end to end on the loopback
PostgreSQL and MariaDB with throwaway logins: afterwards the new password works, the old
one does not, and the server's stored credentials connect; a refused change leaves the old
password valid and stored.

The loopback PostgreSQL trusts 127.0.0.1 (any password logs in), so there the passwords
are checked against the SCRAM verifier the server stored, as a scram-sha-256 login would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opscenter.models import Server
from opscenter.servers import service as servers
from tests.commands.helpers import unique
from tests.conftest import Api
from tests.helpers import psql
from tests.runbooks.test_sops_api import settle


def scram_accepts(verifier: str, password: str) -> bool:
    """What a scram-sha-256 login checks (RFC 5802), written out independently."""
    mech, _, rest = verifier.partition("$")
    assert mech == "SCRAM-SHA-256", verifier
    params, _, keys = rest.partition("$")
    iterations, salt = params.split(":")
    stored_key, _ = keys.split(":")
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


def mariadb_login(user: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mariadb", "-h127.0.0.1", "-P3306", f"-u{user}", "--batch", "-N", "-e", "SELECT 1"],
        env={"MYSQL_PWD": password, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


def mariadb_root(sql: str) -> None:
    subprocess.run(["mariadb", "-h127.0.0.1", "-P3306", "-uroot", "-e", sql], check=True)


@pytest.fixture
def pg_role() -> Iterator[tuple[str, str]]:
    name, old = f"oc_rot_{uuid.uuid4().hex[:8]}", f"old-{uuid.uuid4().hex}"
    psql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{old}'")
    yield name, old
    psql(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture
def my_user() -> Iterator[tuple[str, str]]:
    name, old = f"oc_rot_{uuid.uuid4().hex[:8]}", f"old'{uuid.uuid4().hex}"
    quoted = old.replace("'", "''")
    mariadb_root(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{quoted}'")
    yield name, old
    mariadb_root(f"DROP USER IF EXISTS '{name}'@'%'")


def verifier_of(role: str) -> str:
    return psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'")


async def stored_password(api: Api, server_id: int) -> str:
    ctx = api.app.state.ctx
    async with ctx.db.read_session() as session:
        server = await session.get(Server, server_id)
        assert server is not None
        password: str = servers.target_of(ctx.keyring, server).password or ""
    return password


async def rotate(api: Api, admin: httpx.AsyncClient, server: dict[str, Any]) -> dict[str, Any]:
    r = await admin.post(
        "/api/v1/sops/builtins/rotate-db-password",
        json={"name": unique("rotate"), "server_ids": [server["id"]]},
    )
    assert r.status_code == 201, r.text
    r = await admin.post(f"/api/v1/sops/{r.json()['id']}/execute", json={})
    assert r.status_code == 202, r.text
    return await settle(api, admin, r.json())


async def add_server(admin: httpx.AsyncClient, kind: str, port: int, user: str, pw: str) -> Any:
    r = await admin.post(
        "/api/v1/servers",
        json={
            "name": unique(kind),
            "type": kind,
            "host": "127.0.0.1",
            "port": port,
            "credentials": {"username": user, "password": pw},
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


async def test_postgres_rotation(
    api: Api, admin: httpx.AsyncClient, pg_role: tuple[str, str]
) -> None:
    role, old = pg_role
    server = await add_server(admin, "postgresql", 5432, role, old)
    run = await rotate(api, admin, server)
    assert run["status"] == "waiting" and run["current_step"] == 1, run
    step = run["steps"][0]
    assert step["status"] == "completed", step
    assert step["outputs"]["servers"][str(server["id"])]["database_user"] == role
    new = await stored_password(api, server["id"])
    assert len(new) == 32 and new != old and new not in str(run)
    assert scram_accepts(verifier_of(role), new)
    assert not scram_accepts(verifier_of(role), old)
    r = await admin.post(f"/api/v1/servers/{server['id']}/test-connection")
    assert r.status_code == 200 and r.json()["success"], r.text
    logs = await admin.get("/api/v1/audit/logs", params={"action": "server.rotate_password"})
    assert new not in logs.text and str(server["id"]) in logs.text

    # A change the database refuses: the step fails, saying so; the old password stays.
    psql(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
    before = verifier_of(role)
    run = await rotate(api, admin, server)
    assert run["status"] == "failed" and run["steps"][0]["status"] == "failed", run
    error = run["steps"][0]["outputs"]["error"]
    assert "read-only transaction" in error and "stored password still works" in error
    assert verifier_of(role) == before and await stored_password(api, server["id"]) == new


@pytest.mark.parametrize("api", ["sqlite"], indirect=True)
async def test_mariadb_rotation(
    api: Api, admin: httpx.AsyncClient, my_user: tuple[str, str]
) -> None:
    user, old = my_user
    assert mariadb_login(user, old).returncode == 0
    server = await add_server(admin, "mysql", 3306, user, old)
    run = await rotate(api, admin, server)
    assert run["status"] == "waiting" and run["steps"][0]["status"] == "completed", run
    assert run["steps"][0]["outputs"]["servers"][str(server["id"])]["database_user"] == f"{user}@%"
    new = await stored_password(api, server["id"])
    assert new != old and mariadb_login(user, new).stdout.strip() == "1"
    denied = mariadb_login(user, old)
    assert denied.returncode != 0 and "Access denied" in denied.stderr
    r = await admin.post(f"/api/v1/servers/{server['id']}/test-connection")
    assert r.status_code == 200 and r.json()["success"], r.text

    # Stored credentials that no longer log in: nothing changes, and the step says why.
    r = await admin.put(
        f"/api/v1/servers/{server['id']}",
        json={"credentials": {"username": user, "password": "wrong"}},
    )
    assert r.status_code == 200, r.text
    run = await rotate(api, admin, server)
    assert run["status"] == "failed" and "Access denied" in run["steps"][0]["outputs"]["error"]
    assert mariadb_login(user, new).returncode == 0


async def test_rotation_needs_a_database(api: Api, admin: httpx.AsyncClient) -> None:
    local = next(
        s
        for s in (await admin.get("/api/v1/servers", params={"type": "local"})).json()["items"]
        if s["name"] == "this host"
    )
    r = await admin.post(
        "/api/v1/sops/builtins/rotate-db-password",
        json={"name": unique("rotate"), "server_ids": [local["id"]]},
    )
    r = await admin.post(f"/api/v1/sops/{r.json()['id']}/execute", json={})
    assert r.status_code == 422 and "no PostgreSQL or MySQL database" in r.json()["detail"]
    assert r.json()["code"] == "VALIDATION_ERROR"
