"""Token forgery, immediate effect of account changes, mass assignment, privilege limits,
and no secret in any log line or response body."""

from __future__ import annotations

import base64
import json
import os
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest

from opscenter.auth.permissions import BUILTIN_ROLES
from opscenter.core.logging import configure_logging
from opscenter.core.security import Keyring, sha256_hex
from tests.auth.test_auth import ME, assert_unauthorized, bearer
from tests.conftest import ADMIN_PASSWORD, Api

USERS = "/api/v1/users"
VIEWER_PERMISSIONS = BUILTIN_ROLES["viewer"][1]


@dataclass
class Account:
    id: int
    username: str
    password: str


async def create_user(admin: httpx.AsyncClient, role: str = "viewer", **fields: Any) -> Account:
    """Create a user without logging in (each argon2 operation costs ~0.2 s)."""
    username = f"s{uuid.uuid4().hex[:10]}"
    password = f"pw-{uuid.uuid4().hex}"
    body = {
        "username": username,
        "email": f"{username}@example.com",
        "password": password,
        "role": role,
        **fields,
    }
    r = await admin.post(USERS, json=body)
    assert r.status_code == 201, r.text
    return Account(r.json()["id"], username, password)


async def get(api: Api, path: str, headers: dict[str, str]) -> httpx.Response:
    async with api.client(headers) as c:
        return await c.get(path)


# -- token forgery ---------------------------------------------------------------------------
def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _sign(claims: dict[str, Any], key: bytes, kid: str | None, alg: str = "HS256") -> str:
    headers = {"kid": kid} if kid is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short keys for HS512 are the point here
        return jwt.encode(claims, key, algorithm=alg, headers=headers)


def _resign_payload(token: str, claims: dict[str, Any]) -> str:
    """Swap the payload, keep the original header and signature."""
    header, _, signature = token.split(".")
    return f"{header}.{_b64(claims)}.{signature}"


@dataclass
class Forge:
    keyring: Keyring
    token: str  # a genuine token of `claims["sub"]`: access (Bearer) or session (cookie)
    claims: dict[str, Any]
    admin_id: int
    other_typ: str  # the type of the other kind of token

    @property
    def key(self) -> bytes:
        return self.keyring.jwt_keys[self.keyring.jwt_kid]

    @property
    def kid(self) -> str:
        return self.keyring.jwt_kid

    def with_claims(self, **changes: Any) -> dict[str, Any]:
        claims = {**self.claims, **changes}
        return {k: v for k, v in claims.items() if v is not None}

    def without(self, name: str) -> dict[str, Any]:
        return {k: v for k, v in self.claims.items() if k != name}


FORGERIES: dict[str, Callable[[Forge], str]] = {
    "alg_none": lambda f: _b64({"alg": "none", "typ": "JWT", "kid": f.kid}) + f".{_b64(f.claims)}.",
    "alg_none_keeping_signature": lambda f: (
        _b64({"alg": "none", "kid": f.kid}) + "." + ".".join(f.token.split(".")[1:])
    ),
    "other_algorithm_same_key": lambda f: _sign(f.claims, f.key, f.kid, "HS512"),
    "other_secret": lambda f: _sign(f.claims, os.urandom(32), f.kid),
    "tampered_sub": lambda f: _resign_payload(f.token, f.with_claims(sub=str(f.admin_id))),
    "tampered_role": lambda f: _resign_payload(f.token, f.with_claims(role="admin")),
    "expired": lambda f: f.keyring.issue_jwt(
        {k: f.claims[k] for k in ("sub", "sv", "sid", "role", "typ")}, timedelta(seconds=-30)
    )[0],
    "missing_exp": lambda f: _sign(f.without("exp"), f.key, f.kid),
    "wrong_audience": lambda f: _sign(f.with_claims(aud="another-api"), f.key, f.kid),
    "wrong_issuer": lambda f: _sign(f.with_claims(iss="someone-else"), f.key, f.kid),
    "unknown_kid": lambda f: _sign(f.claims, f.key, "no-such-kid"),
    "no_kid": lambda f: _sign(f.claims, f.key, None),
    "not_yet_valid": lambda f: _sign(f.with_claims(nbf=f.claims["exp"] - 1), f.key, f.kid),
    "other_token_type": lambda f: _sign(f.with_claims(typ=f.other_typ), f.key, f.kid),
    "refresh_type": lambda f: _sign(f.with_claims(typ="refresh"), f.key, f.kid),
    "no_type": lambda f: _sign(f.without("typ"), f.key, f.kid),
    "stale_session_version": lambda f: _sign(f.with_claims(sv=f.claims["sv"] - 1), f.key, f.kid),
    "truncated_signature": lambda f: f.token[:-4],
    "not_a_jwt": lambda f: "definitely.not.a-jwt",
}


@pytest.fixture(scope="module")
async def forges(api: Api, admin_headers: dict[str, str]) -> dict[str, Forge]:
    """Genuine tokens of a fresh viewer, as a Bearer access token and as a session cookie."""
    async with api.client(admin_headers) as admin:
        account = await create_user(admin)
        admin_id = (await admin.get(ME)).json()["id"]
    async with api.client() as c:
        r = await c.post(
            "/api/v1/auth/login", json={"username": account.username, "password": account.password}
        )
        access, session = r.json()["access_token"], c.cookies["session_token"]
    keyring: Keyring = api.app.state.ctx.keyring
    return {
        "bearer": Forge(keyring, access, keyring.decode_jwt(access), admin_id, "session"),
        "cookie": Forge(keyring, session, keyring.decode_jwt(session), admin_id, "access"),
    }


async def call_with(api: Api, how: str, token: str) -> httpx.Response:
    async with api.client() as c:
        if how == "bearer":
            return await c.get(ME, headers=bearer(token))
        c.cookies.set("session_token", token)
        return await c.get(ME)


@pytest.mark.parametrize("how", ["bearer", "cookie"])
async def test_forgery_harness_control(api: Api, forges: dict[str, Forge], how: str) -> None:
    """The tokens below differ from a working one only by what each test names."""
    forge = forges[how]
    assert forge.claims["typ"] == ("access" if how == "bearer" else "session")
    for token in (
        forge.token,
        _sign(forge.claims, forge.key, forge.kid),
        forge.keyring.issue_jwt(
            {k: forge.claims[k] for k in ("sub", "sv", "sid", "role", "typ")},
            timedelta(minutes=5),
        )[0],
    ):
        r = await call_with(api, how, token)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == int(forge.claims["sub"])


@pytest.mark.parametrize("name", sorted(FORGERIES))
async def test_forged_tokens_are_rejected(api: Api, forges: dict[str, Forge], name: str) -> None:
    for how, forge in forges.items():
        token = FORGERIES[name](forge)
        assert token != forge.token
        r = await call_with(api, how, token)
        assert_unauthorized(r)
        assert r.headers["www-authenticate"] == "Bearer"


# -- account changes take effect on the next request ---------------------------------------------
async def test_disabling_a_user_ends_every_session_at_once(
    api: Api, admin: httpx.AsyncClient
) -> None:
    account = await create_user(admin, "operator")
    async with api.client() as c:
        r = await c.post(
            "/api/v1/auth/login", json={"username": account.username, "password": account.password}
        )
        pair = r.json()
        cookie = c.cookies["session_token"]
    token = bearer(pair["access_token"])
    assert (await get(api, "/api/v1/audit/logs", token)).status_code == 200

    r = await admin.put(f"{USERS}/{account.id}", json={"is_active": False})
    assert r.status_code == 200, r.text
    assert_unauthorized(await get(api, "/api/v1/audit/logs", token))
    async with api.client() as c:
        assert_unauthorized(
            await c.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        )
        c.cookies.set("session_token", cookie)
        assert_unauthorized(await c.get(ME))

    # Enabling the account again does not bring the old sessions back.
    assert (await admin.put(f"{USERS}/{account.id}", json={"is_active": True})).status_code == 200
    assert_unauthorized(await get(api, ME, token))
    async with api.client() as c:
        r = await c.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert_unauthorized(r)


async def test_role_change_applies_on_the_next_request(api: Api, admin: httpx.AsyncClient) -> None:
    account = await create_user(admin, "operator")
    token = await api.headers_for(account.username, account.password)
    assert (await get(api, "/api/v1/audit/logs", token)).status_code == 200

    r = await admin.put(f"{USERS}/{account.id}", json={"role": "viewer"})
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    assert_unauthorized(await get(api, "/api/v1/audit/logs", token))

    token = await api.headers_for(account.username, account.password)
    r = await get(api, "/api/v1/audit/logs", token)
    assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    me = (await get(api, ME, token)).json()
    assert me["role"] == "viewer" and sorted(me["permissions"]) == sorted(VIEWER_PERMISSIONS)


async def test_password_change_invalidates_old_sessions(api: Api, admin: httpx.AsyncClient) -> None:
    account = await create_user(admin)
    async with api.client() as c:
        r = await c.post(
            "/api/v1/auth/login", json={"username": account.username, "password": account.password}
        )
        pair = r.json()
        cookie = c.cookies["session_token"]
    new_password = f"new-{uuid.uuid4().hex}"
    r = await admin.put(f"{USERS}/{account.id}", json={"password": new_password})
    assert r.status_code == 200, r.text

    assert_unauthorized(await get(api, ME, bearer(pair["access_token"])))
    async with api.client() as c:
        # The refresh token must not mint a fresh access token for the old session.
        r = await c.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert_unauthorized(r)
        c.cookies.set("session_token", cookie)
        assert_unauthorized(await c.get(ME))
        r = await c.post(
            "/api/v1/auth/login", json={"username": account.username, "password": account.password}
        )
        assert_unauthorized(r)
    assert (await api.login(account.username, new_password))["user"]["id"] == account.id


# -- mass assignment and privilege limits ----------------------------------------------------
SMUGGLED = {
    "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
    "is_admin": True,
    "id": 1,
    "session_version": 99,
    "role_id": 1,
    "permissions": ["write:users"],
}


@pytest.mark.parametrize("field", sorted(SMUGGLED))
async def test_create_user_rejects_smuggled_fields(
    api: Api, admin: httpx.AsyncClient, field: str
) -> None:
    username = f"mass{uuid.uuid4().hex[:10]}"
    password = f"pw-{uuid.uuid4().hex}"
    body = {
        "username": username,
        "email": f"{username}@example.com",
        "password": password,
        field: SMUGGLED[field],
    }
    r = await admin.post(USERS, json=body)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["code"] == "VALIDATION_ERROR"
    assert any(field in e["loc"] for e in err["detail"]), err
    assert "$argon2" not in r.text and password not in r.text  # input not echoed
    r = await admin.get(USERS, params={"q": username})
    assert r.json()["total"] == 0


async def test_update_user_rejects_smuggled_fields(api: Api, admin: httpx.AsyncClient) -> None:
    account = await create_user(admin, "operator")
    before = (await admin.get(f"{USERS}/{account.id}")).json()
    for field in ("password_hash", "session_version", "id", "username"):
        r = await admin.put(f"{USERS}/{account.id}", json={field: SMUGGLED.get(field, "x")})
        assert r.status_code == 422, (field, r.text)
        assert r.json()["code"] == "VALIDATION_ERROR"
    r = await admin.put(f"{USERS}/{account.id}", json={"full_name": "x", "is_admin": True})
    assert r.status_code == 422
    assert (await admin.get(f"{USERS}/{account.id}")).json() == before


async def test_operator_cannot_raise_own_role(api: Api, admin: httpx.AsyncClient) -> None:
    account = await create_user(admin, "operator")
    token = await api.headers_for(account.username, account.password)
    async with api.client(token) as c:
        for body in ({"role": "admin"}, {"is_active": True}):
            r = await c.put(f"{USERS}/{account.id}", json=body)
            assert r.status_code == 403, r.text
            assert r.json()["code"] == "FORBIDDEN"
        r = await c.post(
            "/api/v1/users/roles", json={"name": f"r{uuid.uuid4().hex[:8]}", "permissions": ["x"]}
        )
        assert r.status_code == 403
        me = (await c.get(ME)).json()
    assert me["role"] == "operator"
    assert (await admin.get(f"{USERS}/{account.id}")).json()["role"] == "operator"


@pytest.fixture(scope="module")
async def user_manager(api: Api, admin_headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A custom role that may manage users and roles, but holds only viewer rights otherwise."""
    role = f"usermgr-{uuid.uuid4().hex[:6]}"
    perms = [*VIEWER_PERMISSIONS, "read:users", "write:users", "read:roles", "write:roles"]
    async with api.client(admin_headers) as admin:
        r = await admin.post("/api/v1/users/roles", json={"name": role, "permissions": perms})
        assert r.status_code == 201, r.text
        assert sorted(r.json()["permissions"]) == sorted(set(perms))
        account = await create_user(admin, role)
    return role, await api.headers_for(account.username, account.password)


async def test_nobody_grants_more_than_they_hold(
    api: Api, admin: httpx.AsyncClient, user_manager: tuple[str, dict[str, str]]
) -> None:
    role, headers = user_manager
    me = (await get(api, ME, headers)).json()
    assert me["role"] == role
    async with api.client(headers) as c:
        for grant in ("admin", "operator"):
            name = f"g{uuid.uuid4().hex[:10]}"
            body = {
                "username": name,
                "email": f"{name}@example.com",
                "password": f"pw-{uuid.uuid4().hex}",
                "role": grant,
            }
            r = await c.post(USERS, json=body)
            assert r.status_code == 403, (grant, r.text)
            assert r.json()["code"] == "FORBIDDEN"
            assert (await admin.get(USERS, params={"q": name})).json()["total"] == 0

        # Control: a role within their own rights can be granted.
        name = f"g{uuid.uuid4().hex[:10]}"
        body = {"username": name, "email": f"{name}@example.com", "password": "p" * 16}
        r = await c.post(USERS, json=body)
        assert r.status_code == 201 and r.json()["role"] == "viewer"
        viewer_id = r.json()["id"]

        r = await c.put(f"{USERS}/{viewer_id}", json={"role": "operator"})
        assert r.status_code == 403
        r = await c.put(f"{USERS}/{me['id']}", json={"role": "admin"})
        assert r.status_code == 403
        assert (await admin.get(f"{USERS}/{viewer_id}")).json()["role"] == "viewer"
        assert (await admin.get(f"{USERS}/{me['id']}")).json()["role"] == role

        # Nor a new role carrying rights they lack.
        wider = f"wider-{uuid.uuid4().hex[:6]}"
        r = await c.post(
            "/api/v1/users/roles",
            json={"name": wider, "permissions": ["read:servers", "write:servers"]},
        )
        assert r.status_code == 403, r.text
        narrower = f"narrow-{uuid.uuid4().hex[:6]}"
        r = await c.post(
            "/api/v1/users/roles", json={"name": narrower, "permissions": ["read:servers"]}
        )
        assert r.status_code == 201, r.text
        names = {x["name"] for x in (await c.get("/api/v1/users/roles/list")).json()["items"]}
        assert narrower in names and wider not in names

        r = await c.post("/api/v1/admin/tokens", json={"name": "nope"})
        assert r.status_code == 403


async def test_user_manager_cannot_take_over_a_higher_account(
    api: Api, admin: httpx.AsyncClient, user_manager: tuple[str, dict[str, str]]
) -> None:
    _, headers = user_manager
    target = await create_user(admin, "admin")
    async with api.client(headers) as c:
        r = await c.put(f"{USERS}/{target.id}", json={"email": f"x{uuid.uuid4().hex[:8]}@ex.com"})
        assert r.status_code == 403, r.text
        r = await c.put(f"{USERS}/{target.id}", json={"is_active": False})
        assert r.status_code == 403, r.text
        r = await c.put(f"{USERS}/{target.id}", json={"password": "taken-over-password"})
        assert r.status_code == 403, r.text
        r = await c.delete(f"{USERS}/{target.id}")
        assert r.status_code == 403, r.text


# -- no secret in logs or responses ----------------------------------------------------------
async def test_no_secret_in_any_log_line_or_response(
    api: Api, admin: httpx.AsyncClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    configure_logging("DEBUG")  # every request line, not only warnings
    responses: list[httpx.Response] = []
    try:
        username = f"sec{uuid.uuid4().hex[:10]}"
        password = f"first-{uuid.uuid4().hex}"
        wrong = f"wrong-{uuid.uuid4().hex}"
        third = f"third-{uuid.uuid4().hex}"
        fourth = f"fourth-{uuid.uuid4().hex}"
        r = await admin.post(
            USERS,
            json={"username": username, "email": f"{username}@example.com", "password": password},
        )
        assert r.status_code == 201
        responses.append(r)
        user_id = r.json()["id"]
        async with api.client({"User-Agent": "secret-test"}) as c:
            login = "/api/v1/auth/login"
            for body in (
                {"username": username, "password": wrong},
                {"username": f"ghost{username}", "password": wrong},
                {"username": username, "password": third, "password_hash": third},
                {"username": username, "password": f"password={wrong}"},
            ):
                r = await c.post(login, json=body)
                assert r.status_code in {401, 422}, r.text
                responses.append(r)
            r = await c.post(login, json={"username": username, "password": password})
            assert r.status_code == 200
            pair = r.json()
            r = await c.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            assert r.status_code == 200
            rotated = r.json()
        r = await admin.post("/api/v1/admin/tokens", json={"name": "secret-test"})
        assert r.status_code == 201
        raw_key = r.json()["key"]
        responses.append(await get(api, ME, {"X-API-Key": raw_key}))
        r = await admin.put(f"{USERS}/{user_id}", json={"password": fourth})
        assert r.status_code == 200
        responses.append(r)
        r = await admin.post(
            USERS,
            json={
                "username": f"h{username}",
                "email": f"h{username}@example.com",
                "password": fourth,
                "password_hash": SMUGGLED["password_hash"],
            },
        )
        assert r.status_code == 422
        responses.append(r)
        for path in (
            USERS,
            f"{USERS}/{user_id}",
            ME,
            "/api/v1/admin/tokens",
            "/api/v1/audit/logs?limit=1000",
            "/api/v1/audit/export?format=json",
            "/api/v1/audit/export?format=csv",
        ):
            r = await admin.get(path)
            assert r.status_code == 200, (path, r.text)
            responses.append(r)
    finally:
        configure_logging(api.settings.log_level)
    out, err = capfd.readouterr()
    logs = out + err

    assert '"path": "/api/v1/auth/login"' in logs, "the request log was not captured"
    assert '"path": "/api/v1/admin/tokens"' in logs
    secrets = {
        "password": password,
        "wrong password": wrong,
        "third password": third,
        "new password": fourth,
        "api key": raw_key,
        "api key digest": sha256_hex(raw_key),
        "access token": pair["access_token"],
        "refresh token": pair["refresh_token"],
        "rotated refresh token": rotated["refresh_token"],
        "refresh token digest": sha256_hex(pair["refresh_token"]),
        "password hash": "$argon2",
    }
    for what, value in secrets.items():
        assert value not in logs, f"{what} in the logs"
        for r in responses:
            assert value not in r.text, f"{what} in the response of {r.request.url}"
    for r in responses:
        if r.is_success:  # (a 422 names the refused field, without its value)
            assert "password_hash" not in r.text and "key_hash" not in r.text, r.request.url
    assert ADMIN_PASSWORD not in logs
