"""Test before saving: `POST /servers/test-connection` probes an unsaved server body with
the same tools as a stored server's test, and stores and audits nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Api, UserFactory

URL = "/api/v1/servers/test-connection"
PG = {
    "type": "postgresql",
    "host": "127.0.0.1",
    "port": 5432,
    "credentials": {"username": "postgres"},
}
MARIADB = {"type": "mysql", "host": "127.0.0.1", "port": 3306}


def unique() -> str:
    return f"unsaved-{uuid.uuid4().hex[:8]}"


async def counts(client: httpx.AsyncClient) -> tuple[int, int]:
    """Servers and server audit records: neither may grow."""
    servers = (await client.get("/api/v1/servers")).json()["total"]
    audit = (await client.get("/api/v1/audit/logs", params={"resource_type": "server"})).json()
    return servers, audit["total"]


async def test_a_reachable_postgresql_succeeds_and_nothing_is_stored(
    api: Api, admin: httpx.AsyncClient
) -> None:
    before = await counts(admin)
    name = unique()
    secret = f"pw-{uuid.uuid4().hex}"
    body = {**PG, "name": name, "credentials": {"username": "postgres", "password": secret}}
    r = await admin.post(URL, json=body)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["success"] is True and result["code"] is None
    assert "PostgreSQL" in (result["version"] or "") and result["latency_ms"] >= 0
    assert secret not in r.text
    assert await counts(admin) == before
    assert (await admin.get("/api/v1/servers", params={"q": name})).json()["total"] == 0


async def test_a_closed_port_fails_with_a_code(api: Api, admin: httpx.AsyncClient) -> None:
    before = await counts(admin)
    r = await admin.post(URL, json={**PG, "name": unique(), "port": 1})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["success"] is False and result["code"] == "unreachable"
    assert "host and port" in result["message"]
    assert await counts(admin) == before


async def test_a_wrong_password_is_named_but_never_echoed(
    api: Api, admin: httpx.AsyncClient
) -> None:
    secret = f"definitely-wrong-{uuid.uuid4().hex}"
    body = {**MARIADB, "name": unique(), "credentials": {"username": "root", "password": secret}}
    r = await admin.post(URL, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["success"] is False and r.json()["code"] == "auth_failed"
    assert secret not in r.text


@pytest.mark.parametrize(
    "body",
    [
        {"type": "postgresql"},  # no name
        {"name": "x", "type": "postgresql"},  # a networked server needs a host
        {"name": "x", "type": "sqlite"},  # a sqlite server needs paths
        {"name": "x", "type": "nosuch", "host": "h"},
        {"name": "x", "type": "postgresql", "host": "h", "port": 70000},
        {"name": "x", "type": "postgresql", "host": "bad host!"},
        {"name": "x", "type": "postgresql", "host": "h", "db_engine": "mysql"},
        {"name": "x", "type": "postgresql", "host": "h", "unknown_field": 1},
    ],
)
async def test_bad_input_is_a_validation_error(
    api: Api, admin: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    before = await counts(admin)
    r = await admin.post(URL, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "VALIDATION_ERROR"
    assert await counts(admin) == before


async def test_needs_the_right_to_create_servers(api: Api, make_user: UserFactory) -> None:
    body = {**PG, "name": unique()}
    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        r = await c.post(URL, json=body)
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    operator = await make_user("operator")
    async with operator.client(api) as c:
        assert (await c.post(URL, json=body)).json()["success"] is True
        # Not a team of the caller: the same answer as for creating there.
        r = await c.post(URL, json={**body, "team_id": 2_000_000})
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    async with api.client() as c:
        r = await c.post(URL, json=body)
        assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"


async def test_the_stored_servers_test_still_answers(api: Api, admin: httpx.AsyncClient) -> None:
    """The literal route sits next to `/{server_id}/test-connection`; both must work."""
    r = await admin.post("/api/v1/servers", json={**PG, "name": unique()})
    assert r.status_code == 201, r.text
    server_id = r.json()["id"]
    r = await admin.post(f"/api/v1/servers/{server_id}/test-connection")
    assert r.status_code == 200 and r.json()["success"] is True
    assert (await admin.delete(f"/api/v1/servers/{server_id}")).status_code == 204
