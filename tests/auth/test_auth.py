"""Login, refresh-token rotation with reuse detection, logout, /auth/me, cookie sessions."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from opscenter.core.clock import utcnow
from opscenter.core.security import sha256_hex
from opscenter.models import RefreshToken
from tests.conftest import ADMIN_PASSWORD, Api, UserFactory

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/auth/me"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    body = r.json()
    assert body["code"] == "UNAUTHORIZED"
    assert set(body) == {"detail", "code", "timestamp"}


def set_cookies(r: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers by cookie name (the whole header line, attributes included)."""
    return {line.split("=", 1)[0]: line for line in r.headers.get_list("set-cookie")}


async def me(api: Api, headers: dict[str, str]) -> httpx.Response:
    async with api.client(headers) as c:
        return await c.get(ME)


async def refresh(api: Api, token: str) -> httpx.Response:
    async with api.client() as c:
        return await c.post(REFRESH, json={"refresh_token": token})


async def audit_items(admin: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    r = await admin.get("/api/v1/audit/logs", params={"action": action, "limit": 1000})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


# -- login ---------------------------------------------------------------------------------
async def test_login_by_username_and_email_any_case(api: Api, make_user: UserFactory) -> None:
    name = f"Mixed{uuid.uuid4().hex[:8]}"
    user = await make_user("viewer", username=name)
    for body in (
        {"username": name.upper(), "password": user.password},
        {"email": f"{name}@EXAMPLE.com".upper(), "password": user.password},
        {"username": f"{name.lower()}@example.com", "password": user.password},
    ):
        async with api.client() as c:
            r = await c.post(LOGIN, json=body)
        assert r.status_code == 200, (body, r.text)
        data = r.json()
        assert set(data) == {
            "access_token",
            "token",
            "expiresAt",
            "refresh_token",
            "token_type",
            "expires_at",
            "refresh_expires_at",
            "csrf_token",
            "user",
        }
        assert data["token_type"] == "bearer"
        assert data["expires_at"].endswith("Z") and data["refresh_expires_at"].endswith("Z")
        assert data["expires_at"] < data["refresh_expires_at"]
        assert data["refresh_token"] != data["access_token"]
        assert data["user"]["id"] == user.id and data["user"]["username"] == name
        assert data["user"]["role"] == "viewer"
        assert not [k for k in data["user"] if "pass" in k or "hash" in k]
        assert "$argon2" not in r.text and user.password not in r.text
        cookie = set_cookies(r)["session_token"]
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        assert "path=/" in cookie.lower()
        # The cookie is a separate session credential, not the access token.
        assert c.cookies.get("session_token") not in (None, data["access_token"])
        assert (await me(api, bearer(data["access_token"]))).json()["id"] == user.id


async def test_wrong_password_and_unknown_user_look_the_same(
    api: Api, make_user: UserFactory, admin: httpx.AsyncClient
) -> None:
    user = await make_user("viewer")
    wrong = f"wrong-{uuid.uuid4().hex}"
    unknown = f"ghost{uuid.uuid4().hex[:10]}"
    async with api.client() as c:
        r1 = await c.post(LOGIN, json={"username": user.username, "password": wrong})
        r2 = await c.post(LOGIN, json={"username": unknown, "password": wrong})
        r3 = await c.post(LOGIN, json={"email": f"{unknown}@example.com", "password": wrong})
    # An unknown user costs a password check too (against a dummy hash): no fast "no such
    # user" path that would let anyone enumerate accounts by timing.
    known_s = r1.elapsed.total_seconds()
    assert min(r2.elapsed.total_seconds(), r3.elapsed.total_seconds()) > known_s / 4
    for r in (r1, r2, r3):
        assert_unauthorized(r)
        assert r.json()["detail"] == r1.json()["detail"]
        assert "session_token" not in set_cookies(r)
        assert wrong not in r.text

    items = await audit_items(admin, "auth.login_failed")
    mine = {i["username"]: i for i in items if i["username"] in {user.username.lower(), unknown}}
    assert set(mine) == {user.username.lower(), unknown}
    assert mine[user.username.lower()]["user_id"] == user.id
    assert mine[user.username.lower()]["outcome"] == "failure"
    assert mine[unknown]["user_id"] is None
    for item in items:
        assert wrong not in json.dumps(item)


async def test_disabled_user_cannot_log_in(
    api: Api, make_user: UserFactory, admin: httpx.AsyncClient
) -> None:
    user = await make_user("operator")
    r = await admin.put(f"/api/v1/users/{user.id}", json={"is_active": False})
    assert r.status_code == 200 and r.json()["is_active"] is False
    async with api.client() as c:
        r = await c.post(LOGIN, json={"username": user.username, "password": user.password})
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "FORBIDDEN"
        # Without the right password a disabled account looks like any other miss.
        r = await c.post(LOGIN, json={"username": user.username, "password": "not-it-at-all"})
        assert_unauthorized(r)


async def test_login_does_not_stall_other_requests(api: Api) -> None:
    """The password hash is checked off the event loop: while a login is busy hashing,
    the process keeps serving (a blocked loop would show a gap as long as the hash)."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with api.client() as c:
        beat = asyncio.create_task(heartbeat())
        started = time.perf_counter()
        r = await c.post(LOGIN, json={"username": "admin", "password": "not-the-password"})
        took = time.perf_counter() - started
        done.set()
        await beat
    assert_unauthorized(r)
    assert gaps and max(gaps) < took / 2, (max(gaps), took)


async def test_login_input_is_validated(api: Api) -> None:
    async with api.client() as c:
        for body in (
            {"password": "x"},
            {"username": "admin"},
            {"username": "admin", "password": ADMIN_PASSWORD, "role": "admin"},
            {"username": "", "password": "x"},
        ):
            r = await c.post(LOGIN, json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["code"] == "VALIDATION_ERROR"
            assert ADMIN_PASSWORD not in r.text
        r = await c.post(LOGIN, content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR"


# -- refresh -------------------------------------------------------------------------------
async def test_refresh_rotates_and_reuse_revokes_the_family(
    api: Api, make_user: UserFactory, admin: httpx.AsyncClient
) -> None:
    user = await make_user("viewer")
    first = await api.login(user.username, user.password)

    r = await refresh(api, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["user"]["id"] == user.id
    assert "session_token" in set_cookies(r)
    assert (await me(api, bearer(second["access_token"]))).status_code == 200

    # The refresh token as a Bearer header works too.
    async with api.client(bearer(second["refresh_token"])) as c:
        r = await c.post(REFRESH)
    assert r.status_code == 200, r.text
    third = r.json()
    assert third["refresh_token"] not in {first["refresh_token"], second["refresh_token"]}
    assert (await me(api, bearer(third["access_token"]))).status_code == 200

    # An already used token: rejected, and the whole session is gone with it.
    assert_unauthorized(await refresh(api, first["refresh_token"]))
    assert_unauthorized(await refresh(api, third["refresh_token"]))
    for pair in (first, second, third):
        assert_unauthorized(await me(api, bearer(pair["access_token"])))

    reuse = [i for i in await audit_items(admin, "auth.refresh_reuse") if i["resource_id"]]
    assert str(user.id) in {i["resource_id"] for i in reuse}
    assert all(first["refresh_token"] not in json.dumps(i) for i in reuse)

    # Other sessions of the same user are untouched.
    other = await api.login(user.username, user.password)
    assert (await refresh(api, other["refresh_token"])).status_code == 200


async def test_concurrent_use_of_one_refresh_token_yields_one_session(
    api: Api, make_user: UserFactory
) -> None:
    user = await make_user("viewer")
    pair = await api.login(user.username, user.password)
    results = await asyncio.gather(*(refresh(api, pair["refresh_token"]) for _ in range(3)))
    ok = [r for r in results if r.status_code == 200]
    assert len(ok) <= 1, [r.status_code for r in results]
    for r in results:
        assert r.status_code in {200, 401}, r.text
    # Whoever lost the race presented a used token: the family is revoked.
    for r in ok:
        assert_unauthorized(await refresh(api, r.json()["refresh_token"]))


async def test_refresh_rejects_garbage_missing_and_expired(
    api: Api, make_user: UserFactory
) -> None:
    async with api.client() as c:
        for token in ("garbage", "ocr_" + "A" * 43, "x" * 512):
            assert_unauthorized(await c.post(REFRESH, json={"refresh_token": token}))
        assert_unauthorized(await c.post(REFRESH, headers=bearer("not-a-token")))
        r = await c.post(REFRESH)
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "BAD_REQUEST"
        r = await c.post(REFRESH, json={"refresh_token": ""})
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR"

    user = await make_user("viewer")
    # An access token is not a refresh token.
    assert_unauthorized(await refresh(api, user.headers["Authorization"][7:]))
    pair = await api.login(user.username, user.password)
    async with api.app.state.ctx.db.write_session() as s:
        await s.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == sha256_hex(pair["refresh_token"]))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await s.commit()
    assert_unauthorized(await refresh(api, pair["refresh_token"]))


# -- seed 004's front end ------------------------------------------------------------------
SEED_004_USER_FIELDS = {"id", "name", "email", "role", "team", "permissions", "createdAt"}


async def test_seed_004_login_and_me_answer_its_fields(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = (
        await admin.post("/api/v1/users/teams", json={"name": f"Platform-{uuid.uuid4().hex[:6]}"})
    ).json()
    user = await make_user("operator", full_name="John Doe", team_ids=[team["id"]])
    async with api.client() as c:
        r = await c.post(
            LOGIN, json={"email": f"{user.username}@example.com", "password": user.password}
        )
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["token"] == data["access_token"] and data["expiresAt"] == data["expires_at"]
    for body in (data["user"], (await me(api, bearer(data["token"]))).json()):
        assert SEED_004_USER_FIELDS | {"lastLogin", "avatar"} <= set(body), body
        assert body["name"] == "John Doe" and body["team"] == team["name"]
        assert body["role"] == "operator" and "write:backups" in body["permissions"]
        assert body["createdAt"] == body["created_at"] and body["createdAt"].endswith("Z")
        assert body["lastLogin"] == body["last_login"] and body["lastLogin"].endswith("Z")
        assert body["avatar"] is None


async def test_seed_004_refresh_with_the_access_token_slides_the_session(
    api: Api, make_user: UserFactory
) -> None:
    user = await make_user("viewer")
    pair = await api.login(user.username, user.password)
    async with api.client(bearer(pair["token"])) as c:
        r = await c.post(REFRESH)  # seed 004's Step 3, as written: no body
    assert r.status_code == 200, r.text
    renewed = r.json()
    assert {"token", "expiresAt"} <= set(renewed) and "refresh_token" not in renewed
    assert renewed["token"] != pair["token"] and renewed["expiresAt"] >= pair["expiresAt"]
    assert (await me(api, bearer(renewed["token"]))).json()["id"] == user.id
    # The refresh-token flow is untouched by it.
    assert (await refresh(api, pair["refresh_token"])).status_code == 200

    # Never past the session's absolute lifetime, counted from the login.
    lifetime = timedelta(hours=api.settings.jwt_expiration_hours)
    async with api.app.state.ctx.db.write_session() as s:
        await s.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id)
            .values(issued_at=utcnow() - lifetime + timedelta(seconds=30))
        )
        await s.commit()
    async with api.client(bearer(renewed["token"])) as c:
        r = await c.post(REFRESH)
    assert r.status_code == 200, r.text
    ends = (utcnow() + timedelta(seconds=31)).isoformat().replace("+00:00", "Z")
    assert r.json()["expiresAt"] <= ends
    async with api.app.state.ctx.db.write_session() as s:
        await s.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id)
            .values(issued_at=utcnow() - lifetime)
        )
        await s.commit()
    async with api.client(bearer(renewed["token"])) as c:
        assert_unauthorized(await c.post(REFRESH))

    # A logged-out session is not renewed.
    other = await api.login(user.username, user.password)
    async with api.client(bearer(other["token"])) as c:
        assert (await c.post(LOGOUT)).status_code == 204
        assert_unauthorized(await c.post(REFRESH))


# -- logout --------------------------------------------------------------------------------
async def test_logout_revokes_the_session_and_clears_the_cookie(
    api: Api, make_user: UserFactory
) -> None:
    user = await make_user("viewer")
    async with api.client() as c:
        r = await c.post(LOGIN, json={"username": user.username, "password": user.password})
        pair = r.json()
        session_cookie = c.cookies["session_token"]
    other = await api.login(user.username, user.password)

    async with api.client(bearer(pair["access_token"])) as c:
        r = await c.post(LOGOUT)
    assert r.status_code == 204, r.text
    cleared = set_cookies(r)
    for name in ("session_token", "csrf_token"):
        assert name in cleared and "max-age=0" in cleared[name].lower()

    assert_unauthorized(await me(api, bearer(pair["access_token"])))
    assert_unauthorized(await refresh(api, pair["refresh_token"]))
    async with api.client() as c:
        c.cookies.set("session_token", session_cookie)
        assert_unauthorized(await c.get(ME))
    # Logging out one session leaves the user's other sessions alone.
    assert (await me(api, bearer(other["access_token"]))).status_code == 200

    # Logout can also revoke the session of a given refresh token.
    third = await api.login(user.username, user.password)
    async with api.client(bearer(other["access_token"])) as c:
        r = await c.post(LOGOUT, json={"refresh_token": third["refresh_token"]})
    assert r.status_code == 204
    assert_unauthorized(await me(api, bearer(other["access_token"])))
    assert_unauthorized(await me(api, bearer(third["access_token"])))
    assert_unauthorized(await refresh(api, third["refresh_token"]))


async def test_logout_needs_authentication(api: Api) -> None:
    async with api.client() as c:
        assert_unauthorized(await c.post(LOGOUT))


# -- /auth/me --------------------------------------------------------------------------------
async def test_me_with_bearer_api_key_and_cookie(
    api: Api, make_user: UserFactory, admin: httpx.AsyncClient
) -> None:
    user = await make_user("operator")
    r = await me(api, user.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["username"] == user.username and body["role"] == "operator"
    assert "write:backups" in body["permissions"] and "write:users" not in body["permissions"]
    assert not [k for k in body if "pass" in k or "hash" in k]

    admin_me = (await admin.get(ME)).json()
    r = await admin.post("/api/v1/admin/tokens", json={"name": "me-check", "role": "viewer"})
    assert r.status_code == 201, r.text
    r = await me(api, {"X-API-Key": r.json()["key"]})
    assert r.status_code == 200, r.text
    key_me = r.json()
    assert key_me["id"] == admin_me["id"] and key_me["role"] == "viewer"
    assert set(key_me["permissions"]) < set(admin_me["permissions"])
    assert "read:servers" in key_me["permissions"]
    assert "write:users" not in key_me["permissions"]

    async with api.client() as c:
        r = await c.post(LOGIN, json={"username": user.username, "password": user.password})
        assert r.status_code == 200
        r = await c.get(ME)  # the cookie alone
    assert r.status_code == 200 and r.json()["id"] == user.id

    async with api.client() as c:
        assert_unauthorized(await c.get(ME))
        assert_unauthorized(await c.get(ME, headers={"X-API-Key": "ock_notakey"}))
        assert_unauthorized(await c.get(ME, headers={"Authorization": "Basic YWRtaW46eA=="}))


# -- cookie sessions and CSRF ---------------------------------------------------------------
async def test_cookie_session_writes_need_the_csrf_header(api: Api) -> None:
    async with api.client() as c:
        r = await c.post(LOGIN, json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 200
        csrf = r.json()["csrf_token"]
        assert c.cookies.get("csrf_token") == csrf
        assert (await c.get("/api/v1/users", params={"limit": 1})).status_code == 200

        name = f"csrf{uuid.uuid4().hex[:10]}"
        body = {"username": name, "email": f"{name}@example.com", "password": "p" * 16}
        for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": ""}):
            r = await c.post("/api/v1/users", json=body, headers=headers)
            assert r.status_code == 403, r.text
            assert r.json()["code"] == "FORBIDDEN"
            # where the token comes from, told where a client author looks
            assert "X-CSRF-Token" in r.json()["detail"] and "csrf_token" in r.json()["detail"]
        schemes = api.app.openapi()["components"]["securitySchemes"]
        assert "X-CSRF-Token" in schemes["APIKeyCookie"]["description"]
        r = await c.get("/api/v1/users", params={"q": name})
        assert r.json()["total"] == 0

        r = await c.post("/api/v1/users", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201, r.text

        # The CSRF token of another session does not fit this one.
        other = await api.login("admin", ADMIN_PASSWORD)
        r = await c.post(LOGOUT, headers={"X-CSRF-Token": other["csrf_token"]})
        assert r.status_code == 403
        r = await c.post(LOGOUT, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 204
        assert_unauthorized(await c.get(ME))


async def test_tokens_are_not_interchangeable_between_bearer_and_cookie(
    api: Api, make_user: UserFactory
) -> None:
    user = await make_user("viewer")
    async with api.client() as c:
        r = await c.post(LOGIN, json={"username": user.username, "password": user.password})
        session_token = c.cookies["session_token"]
    access = r.json()["access_token"]
    assert_unauthorized(await me(api, bearer(session_token)))
    async with api.client() as c:
        c.cookies.set("session_token", access)
        assert_unauthorized(await c.get(ME))
        c.cookies.set("session_token", session_token)
        assert (await c.get(ME)).status_code == 200
