"""API keys at /api/v1/admin/tokens: shown once, stored hashed, scoped, expiring, revocable."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update

from opscenter.auth.permissions import BUILTIN_ROLES
from opscenter.core.clock import utcnow
from opscenter.core.security import sha256_hex
from opscenter.models import ApiKey
from tests.auth.test_auth import ME, assert_unauthorized
from tests.auth.test_security import create_user
from tests.conftest import Api, UserFactory

TOKENS = "/api/v1/admin/tokens"
VIEWER_PERMISSIONS = BUILTIN_ROLES["viewer"][1]


async def key_count(api: Api) -> int:
    async with api.app.state.ctx.db.read_session() as s:
        return int(await s.scalar(select(func.count(ApiKey.id))) or 0)


async def listed(admin: httpx.AsyncClient, key_id: int) -> dict[str, Any]:
    r = await admin.get(TOKENS, params={"limit": 1000})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = [i for i in r.json()["items"] if i["id"] == key_id]
    assert len(items) == 1
    return items[0]


async def with_key(api: Api, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    async with api.client({"X-API-Key": key}) as c:
        return await c.request(method, path, **kw)


async def test_key_is_shown_once_and_stored_hashed(api: Api, admin: httpx.AsyncClient) -> None:
    r = await admin.post(TOKENS, json={"name": "backup script", "role": "operator"})
    assert r.status_code == 201, r.text
    created = r.json()
    raw = created["key"]
    assert raw.startswith("ock_") and len(raw) >= 40
    assert created["prefix"] == raw[:12]
    assert created["role"] == "operator" and created["username"] == "admin"
    assert created["expires_at"] is None and created["revoked_at"] is None
    assert created["last_used_at"] is None

    r = await admin.get(TOKENS, params={"limit": 1000})
    assert r.status_code == 200
    assert raw not in r.text and sha256_hex(raw) not in r.text
    item = await listed(admin, created["id"])
    assert "key" not in item and "key_hash" not in item
    assert item["prefix"] == created["prefix"]

    # In the database: only the sha256 digest and the prefix, in no column the key itself.
    async with api.app.state.ctx.db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM api_keys"))).mappings().all()
        audit = (await conn.execute(text("SELECT * FROM audit_logs"))).mappings().all()
    mine = [row for row in rows if row["id"] == created["id"]]
    assert len(mine) == 1 and mine[0]["key_hash"] == sha256_hex(raw)
    for row in [*rows, *audit]:
        assert all(raw not in str(value) for value in row.values())


async def test_key_authenticates_and_records_last_use(api: Api, admin: httpx.AsyncClient) -> None:
    r = await admin.post(TOKENS, json={"name": "monitoring", "role": "viewer"})
    key = r.json()
    started = utcnow()
    r = await with_key(api, key["key"], "GET", ME)
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "viewer"
    assert sorted(r.json()["permissions"]) == sorted(VIEWER_PERMISSIONS)
    item = await listed(admin, key["id"])
    assert item["last_used_at"] is not None
    last_used = datetime.fromisoformat(item["last_used_at"])
    assert started - timedelta(seconds=1) <= last_used <= utcnow()

    # A viewer key reads what viewers read, and nothing of the admin who made it.
    assert (await with_key(api, key["key"], "GET", "/api/v1/users/roles/list")).status_code == 200
    for method, path in (("GET", "/api/v1/users"), ("GET", TOKENS), ("GET", "/api/v1/audit/logs")):
        r = await with_key(api, key["key"], method, path)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["code"] == "FORBIDDEN"

    for near_miss in (key["key"] + "x", key["key"][:-1], key["key"].upper(), key["prefix"]):
        assert_unauthorized(await with_key(api, near_miss, "GET", ME))


async def test_expired_key_is_refused(api: Api, admin: httpx.AsyncClient) -> None:
    r = await admin.post(TOKENS, json={"name": "short-lived", "expires_in_days": 1})
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["expires_at"].endswith("Z")
    assert (await with_key(api, key["key"], "GET", ME)).status_code == 200

    async with api.app.state.ctx.db.write_session() as s:
        await s.execute(
            update(ApiKey)
            .where(ApiKey.id == key["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await s.commit()
    assert_unauthorized(await with_key(api, key["key"], "GET", ME))


async def test_revoked_key_is_refused_on_the_next_request(
    api: Api, admin: httpx.AsyncClient
) -> None:
    r = await admin.post(TOKENS, json={"name": "to revoke", "role": "viewer"})
    key = r.json()
    assert (await with_key(api, key["key"], "GET", ME)).status_code == 200
    r = await admin.delete(f"{TOKENS}/{key['id']}")
    assert r.status_code == 204, r.text
    assert_unauthorized(await with_key(api, key["key"], "GET", ME))
    assert (await listed(admin, key["id"]))["revoked_at"] is not None
    assert (await admin.delete(f"{TOKENS}/{key['id']}")).status_code == 204  # idempotent

    r = await admin.delete(f"{TOKENS}/987654321")
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    audit = await admin.get(
        "/api/v1/audit/logs", params={"action": "token.revoke", "resource_id": str(key["id"])}
    )
    assert audit.json()["total"] >= 1


async def test_key_follows_its_owner(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner = await make_user("admin")
    async with owner.client(api) as c:
        r = await c.post(TOKENS, json={"name": "owner's key", "role": "admin"})
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    assert (await with_key(api, key, "GET", "/api/v1/users")).status_code == 200

    # The owner demoted: the key can no longer do more than its owner can.
    assert (await admin.put(f"/api/v1/users/{owner.id}", json={"role": "viewer"})).is_success
    r = await with_key(api, key, "GET", ME)
    assert r.status_code == 200
    assert set(r.json()["permissions"]) == set(VIEWER_PERMISSIONS)
    assert (await with_key(api, key, "GET", "/api/v1/users")).status_code == 403

    # The owner disabled: the key stops working at once.
    r = await admin.put(f"/api/v1/users/{owner.id}", json={"is_active": False})
    assert r.status_code == 200
    assert_unauthorized(await with_key(api, key, "GET", ME))


async def test_key_role_is_capped_by_the_creator(api: Api, admin: httpx.AsyncClient) -> None:
    role = f"keymgr-{uuid.uuid4().hex[:6]}"
    perms = [*VIEWER_PERMISSIONS, "read:tokens", "write:tokens"]
    r = await admin.post("/api/v1/users/roles", json={"name": role, "permissions": perms})
    assert r.status_code == 201, r.text
    account = await create_user(admin, role)
    headers = await api.headers_for(account.username, account.password)
    before = await key_count(api)
    async with api.client(headers) as c:
        for higher in ("admin", "operator"):
            r = await c.post(TOKENS, json={"name": "too wide", "role": higher})
            assert r.status_code == 403, (higher, r.text)
            assert r.json()["code"] == "FORBIDDEN"
        assert await key_count(api) == before
        r = await c.post(TOKENS, json={"name": "same as mine"})
        assert r.status_code == 201 and r.json()["role"] == role
        r = await c.post(TOKENS, json={"name": "narrower", "role": "viewer"})
        assert r.status_code == 201 and r.json()["role"] == "viewer"
    assert await key_count(api) == before + 2


async def test_a_key_cannot_create_keys(api: Api, admin: httpx.AsyncClient) -> None:
    r = await admin.post(TOKENS, json={"name": "admin automation", "role": "admin"})
    key = r.json()
    assert (await with_key(api, key["key"], "GET", TOKENS)).status_code == 200  # it may read
    before = await key_count(api)
    r = await with_key(api, key["key"], "POST", TOKENS, json={"name": "child", "role": "viewer"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "FORBIDDEN"
    assert await key_count(api) == before


async def test_only_token_admins_reach_the_endpoints(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    key_id = (await admin.post(TOKENS, json={"name": "target"})).json()["id"]
    before = await key_count(api)
    for role in ("viewer", "operator"):
        user = await make_user(role)
        async with user.client(api) as c:
            for method, path, body in (
                ("GET", TOKENS, None),
                ("POST", TOKENS, {"name": "mine", "role": "viewer"}),
                ("DELETE", f"{TOKENS}/{key_id}", None),
            ):
                r = await c.request(method, path, json=body)
                assert r.status_code == 403, (role, method, r.text)
                assert r.json()["code"] == "FORBIDDEN"
    async with api.client() as c:
        for method, path in (("GET", TOKENS), ("POST", TOKENS), ("DELETE", f"{TOKENS}/{key_id}")):
            assert_unauthorized(await c.request(method, path, json={"name": "anon"}))
    assert await key_count(api) == before
    assert (await listed(admin, key_id))["revoked_at"] is None


BAD_BODIES = {
    "empty name": {"name": ""},
    "blank name": {"name": "   "},
    "control char in name": {"name": "a\x00b"},
    "long name": {"name": "n" * 201},
    "no name": {"role": "viewer"},
    "unknown role": {"name": "k", "role": "superuser"},
    "malformed role": {"name": "k", "role": "Admin!"},
    "zero days": {"name": "k", "expires_in_days": 0},
    "negative days": {"name": "k", "expires_in_days": -1},
    "too many days": {"name": "k", "expires_in_days": 3651},
    "both expiries": {"name": "k", "expires_in_days": 5, "expires_at": "2999-01-01T00:00:00Z"},
    "past expiry": {"name": "k", "expires_at": "2000-01-01T00:00:00Z"},
    "past naive expiry": {"name": "k", "expires_at": "2000-01-01T00:00:00"},
    "not a date": {"name": "k", "expires_at": "tomorrow"},
    "smuggled owner": {"name": "k", "user_id": 1},
    "smuggled hash": {"name": "k", "key_hash": "0" * 64},
    "smuggled key": {"name": "k", "key": "ock_chosen-by-the-caller-000000000000000"},
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_bad_input_is_422_and_writes_nothing(
    api: Api, admin: httpx.AsyncClient, case: str
) -> None:
    before = await key_count(api)
    r = await admin.post(TOKENS, json=BAD_BODIES[case])
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "VALIDATION_ERROR"
    assert await key_count(api) == before


async def test_expiry_given_as_a_date(api: Api, admin: httpx.AsyncClient) -> None:
    for given, stored in (
        ("2999-01-01T00:00:00Z", "2999-01-01T00:00:00Z"),
        ("2999-01-01T02:00:00+02:00", "2999-01-01T00:00:00Z"),
        ("2999-01-01T00:00:00", "2999-01-01T00:00:00Z"),  # no offset: read as UTC
    ):
        r = await admin.post(TOKENS, json={"name": "dated", "expires_at": given})
        assert r.status_code == 201, (given, r.text)
        assert r.json()["expires_at"] == stored
        assert (await listed(admin, r.json()["id"]))["expires_at"] == stored
