"""Servers: CRUD, secrets at rest, real connection tests and discovery against the
PostgreSQL and MariaDB on loopback, team scoping."""

from __future__ import annotations

import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import select, text

from opscenter.models import Server
from tests.conftest import Api, UserFactory

PG = {
    "type": "postgresql",
    "host": "127.0.0.1",
    "port": 5432,
    "credentials": {"username": "postgres"},
}
MARIADB = {"type": "mysql", "host": "127.0.0.1", "port": 3306, "credentials": {"username": "root"}}


def unique(prefix: str = "srv") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": unique(), **PG, **fields}
    r = await client.post("/api/v1/servers", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_create_get_update_delete(api: Api, admin: httpx.AsyncClient) -> None:
    server = await create(
        admin,
        environment="production",
        tags={"region": "eu"},
        credentials={"username": "postgres", "password": "s3cret-pw!"},
    )
    assert server["credentials"] == {
        "username": "postgres",
        "has_password": True,
        "has_ssh_key": False,
        "has_db_password": False,
    }
    assert server["health_status"] == "unknown" and server["team_id"] >= 1
    assert "s3cret-pw!" not in str(server)

    r = await admin.get(f"/api/v1/servers/{server['id']}")
    assert r.status_code == 200 and r.json()["tags"] == {"region": "eu"}

    r = await admin.put(
        f"/api/v1/servers/{server['id']}",
        json={"name": "renamed-" + server["name"], "tags": {"region": "us"}},
    )
    assert r.status_code == 200 and r.json()["tags"] == {"region": "us"}
    assert r.json()["credentials"]["has_password"] is True  # untouched when not given

    r = await admin.get("/api/v1/servers", params={"environment": "production", "limit": 1000})
    assert server["id"] in [s["id"] for s in r.json()["items"]]

    r = await admin.delete(f"/api/v1/servers/{server['id']}")
    assert r.status_code == 204
    assert (await admin.get(f"/api/v1/servers/{server['id']}")).status_code == 404
    audit = (
        await admin.get(
            "/api/v1/audit/logs", params={"resource_type": "server", "resource_id": server["id"]}
        )
    ).json()
    assert {i["action"] for i in audit["items"]} == {
        "server.create",
        "server.update",
        "server.delete",
    }
    assert "s3cret-pw!" not in str(audit)


async def test_credentials_are_encrypted_at_rest_and_bound_to_their_row(
    api: Api, admin: httpx.AsyncClient
) -> None:
    server = await create(admin, credentials={"username": "postgres", "password": "pw-at-rest-123"})
    async with api.app.state.ctx.db.read_session() as session:
        row = (
            (
                await session.execute(
                    text("SELECT * FROM servers WHERE id = :id"), {"id": server["id"]}
                )
            )
            .mappings()
            .one()
        )
        assert "pw-at-rest-123" not in str(dict(row))
        stored = await session.scalar(select(Server).where(Server.id == server["id"]))
    keyring = api.app.state.ctx.keyring
    assert stored is not None and stored.credentials_encrypted
    assert "pw-at-rest-123" in keyring.decrypt_secret(
        stored.credentials_encrypted, context=f"servers.credentials:{server['id']}"
    )
    with pytest.raises(InvalidTag):  # copied onto another row, it does not decrypt
        keyring.decrypt_secret(stored.credentials_encrypted, context="servers.credentials:999999")


@pytest.mark.parametrize(
    "body",
    [
        {"type": "postgresql"},  # no host
        {"type": "oracle", "host": "127.0.0.1"},
        {"type": "postgresql", "host": "127.0.0.1", "port": 0},
        {"type": "postgresql", "host": "127.0.0.1", "port": 70000},
        {"type": "postgresql", "host": "bad host; rm -rf /"},
        {"type": "sqlite"},  # no paths
        {"type": "sqlite", "paths": ["relative/path.db"]},
        {"type": "postgresql", "host": "127.0.0.1", "health_status": "healthy"},  # read-only
        {"type": "postgresql", "host": "127.0.0.1", "credentials": {"token": "x"}},
        {"type": "postgresql", "host": "127.0.0.1", "description": "nul\x00byte"},
        {"type": "postgresql", "host": "127.0.0.1", "credentials": {"username": "a\nb"}},
        {"type": "mysql", "host": "127.0.0.1", "credentials": {"db_username": "root\t"}},
        {"type": "postgresql", "host": "127.0.0.1", "port": True},
    ],
)
async def test_bad_input_is_rejected_and_nothing_written(
    api: Api, admin: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    name = unique("bad")
    r = await admin.post("/api/v1/servers", json={"name": name, **body})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "VALIDATION_ERROR"
    listed = (await admin.get("/api/v1/servers", params={"q": name})).json()
    assert listed["total"] == 0


async def test_duplicate_name_in_team_conflicts(api: Api, admin: httpx.AsyncClient) -> None:
    server = await create(admin)
    r = await admin.post("/api/v1/servers", json={"name": server["name"].upper(), **PG})
    assert r.status_code == 409 and r.json()["code"] == "CONFLICT"


async def test_roles_and_authentication(api: Api, make_user: UserFactory) -> None:
    viewer = await make_user("viewer")
    operator = await make_user("operator")
    async with viewer.client(api) as c:
        assert (await c.get("/api/v1/servers")).status_code == 200
        r = await c.post("/api/v1/servers", json={"name": unique(), **PG})
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    async with operator.client(api) as c:
        server = await create(c)
        assert (await c.delete(f"/api/v1/servers/{server['id']}")).status_code == 204
    async with api.client() as c:
        r = await c.get("/api/v1/servers")
        assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"


async def test_another_teams_server_is_a_404(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = (await admin.post("/api/v1/users/teams", json={"name": unique("team")})).json()
    outsider = await make_user("operator", team_ids=[team["id"]])
    server = await create(admin)  # in the default team
    async with outsider.client(api) as c:
        for method, path in [
            ("GET", ""),
            ("PUT", ""),
            ("DELETE", ""),
            ("POST", "/test-connection"),
            ("GET", "/databases"),
        ]:
            kwargs = {"json": {"description": "x"}} if method == "PUT" else {}
            r = await c.request(method, f"/api/v1/servers/{server['id']}{path}", **kwargs)
            assert r.status_code == 404, (method, path, r.text)
        listed = (await c.get("/api/v1/servers", params={"limit": 1000})).json()
        assert server["id"] not in [s["id"] for s in listed["items"]]
        r = await c.post(
            "/api/v1/servers", json={"name": unique(), **PG, "team_id": server["team_id"]}
        )
        assert r.status_code == 404


async def test_postgres_connection_and_databases(api: Api, admin: httpx.AsyncClient) -> None:
    dbname = f"oc_srv_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f'CREATE DATABASE "{dbname}"'],
        check=True,
    )
    try:
        server = await create(admin)
        r = await admin.post(f"/api/v1/servers/{server['id']}/test-connection")
        body = r.json()
        assert r.status_code == 200 and body["success"] is True, body
        assert "PostgreSQL" in body["message"] and body["latency_ms"] >= 0
        assert (await admin.get(f"/api/v1/servers/{server['id']}")).json()[
            "health_status"
        ] == "healthy"

        r = await admin.get(f"/api/v1/servers/{server['id']}/databases")
        assert r.status_code == 200
        found = {d["name"]: d for d in r.json()["databases"]}
        assert dbname in found and found[dbname]["type"] == "postgresql"
        assert found[dbname]["size_mb"] > 0
    finally:
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-qc",
                f'DROP DATABASE IF EXISTS "{dbname}"',
            ],
            check=True,
        )


async def test_unreachable_and_bad_credentials_say_what_to_do(
    api: Api, admin: httpx.AsyncClient
) -> None:
    closed = await create(admin, port=1)
    r = await admin.post(f"/api/v1/servers/{closed['id']}/test-connection")
    body = r.json()
    assert r.status_code == 200 and body["success"] is False and body["code"] == "unreachable"
    assert "host and port" in body["message"]
    assert (await admin.get(f"/api/v1/servers/{closed['id']}")).json()[
        "health_status"
    ] == "unhealthy"
    r = await admin.get(f"/api/v1/servers/{closed['id']}/databases")
    assert r.status_code == 502 and r.json()["code"] == "SERVER_UNREACHABLE"

    wrong = await create(
        admin, **{**MARIADB, "credentials": {"username": "root", "password": "definitely-wrong-pw"}}
    )
    r = await admin.post(f"/api/v1/servers/{wrong['id']}/test-connection")
    body = r.json()
    assert body["success"] is False and body["code"] == "auth_failed", body
    assert "password" in body["message"] and "definitely-wrong-pw" not in body["message"]


async def test_mariadb_connection_and_databases(api: Api, admin: httpx.AsyncClient) -> None:
    dbname = f"oc_srv_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            "mariadb",
            "-h127.0.0.1",
            "-uroot",
            "-e",
            f"CREATE DATABASE {dbname}; CREATE TABLE {dbname}.t (id int primary key);"
            f"INSERT INTO {dbname}.t VALUES (1),(2);",
        ],
        check=True,
    )
    try:
        server = await create(admin, **MARIADB)
        r = await admin.post(f"/api/v1/servers/{server['id']}/test-connection")
        assert r.json()["success"] is True, r.json()
        r = await admin.get(f"/api/v1/servers/{server['id']}/databases")
        names = {d["name"]: d for d in r.json()["databases"]}
        assert dbname in names and names[dbname]["type"] == "mysql"
        assert "mysql" not in names and "information_schema" not in names
    finally:
        subprocess.run(
            ["mariadb", "-h127.0.0.1", "-uroot", "-e", f"DROP DATABASE IF EXISTS {dbname}"],
            check=True,
        )


async def test_sqlite_files(api: Api, admin: httpx.AsyncClient, tmp_path: Path) -> None:
    good = tmp_path / "app.db"
    with sqlite3.connect(good) as conn:
        conn.execute("CREATE TABLE t (x)")
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello")
    server = await create(
        admin, type="sqlite", host=None, port=None, paths=[str(good)], credentials=None
    )
    r = await admin.post(f"/api/v1/servers/{server['id']}/test-connection")
    assert r.json()["success"] is True
    dbs = (await admin.get(f"/api/v1/servers/{server['id']}/databases")).json()["databases"]
    assert dbs == [{"name": str(good), "size_mb": dbs[0]["size_mb"], "type": "sqlite"}]

    bad = await create(
        admin, type="sqlite", host=None, port=None, paths=[str(not_sqlite)], credentials=None
    )
    body = (await admin.post(f"/api/v1/servers/{bad['id']}/test-connection")).json()
    assert body["success"] is False and "not an SQLite database" in body["message"]


async def test_a_viewer_neither_tests_connections_nor_lists_databases(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    # Both connect with the stored credentials (and a test records health): an operator's
    # action, for the server's team.
    server = await create(admin)
    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        for method, path in [("POST", "/test-connection"), ("GET", "/databases")]:
            r = await c.request(method, f"/api/v1/servers/{server['id']}{path}")
            assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN", (path, r.text)
    operator = await make_user("operator")
    async with operator.client(api) as c:
        assert (await c.post(f"/api/v1/servers/{server['id']}/test-connection")).status_code == 200
