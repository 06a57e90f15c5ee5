"""Users: admin-only management, filters and paging, uniqueness, self-protection, the
last active admin, and what deleting a user leaves behind. Both metadata backends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, Api, CreatedUser, UserFactory
from tests.core.helpers import BACKENDS, assert_error, own_app, role_user, uid

USERS = "/api/v1/users"


@pytest.fixture
async def viewer(api: Api, admin_headers: dict[str, str]) -> CreatedUser:
    return await role_user(api, admin_headers, "viewer")


@pytest.fixture
async def operator(api: Api, admin_headers: dict[str, str]) -> CreatedUser:
    return await role_user(api, admin_headers, "operator")


def new_user(role: str = "viewer", **fields: Any) -> dict[str, Any]:
    username = fields.pop("username", uid("u-"))
    return {
        "username": username,
        "email": f"{username}@example.com",
        "password": f"pw-{username}-long-enough",
        "role": role,
        **fields,
    }


async def count_matching(client: httpx.AsyncClient, q: str) -> int:
    r = await client.get(USERS, params={"q": q})
    assert r.status_code == 200, r.text
    total: int = r.json()["total"]
    return total


# -- reading -------------------------------------------------------------------------------
async def test_list_filters_by_role_activity_and_text(admin: httpx.AsyncClient) -> None:
    token = uid("flt")
    created = {}
    for name, role, active in (
        ("op", "operator", True),
        ("v1", "viewer", True),
        ("v2", "viewer", False),
    ):
        body = new_user(role, full_name=f"{token} {name}", is_active=active)
        r = await admin.post(USERS, json=body)
        assert r.status_code == 201, r.text
        created[name] = r.json()

    async def ids(**params: Any) -> list[int]:
        r = await admin.get(USERS, params={"q": token, **params})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "total", "limit", "offset", "total_estimated"}
        assert body["total"] == len(body["items"])
        return [u["id"] for u in body["items"]]

    every = [created[n]["id"] for n in ("op", "v1", "v2")]
    assert await ids() == every  # ordered by id
    assert await ids(role="viewer") == [created["v1"]["id"], created["v2"]["id"]]
    assert await ids(role="operator") == [created["op"]["id"]]
    assert await ids(is_active="false") == [created["v2"]["id"]]
    assert await ids(role="viewer", is_active="true") == [created["v1"]["id"]]
    assert await ids(role="no-such-role") == []
    # q is case-insensitive and searches username, email and full name.
    r = await admin.get(USERS, params={"q": token.upper()})
    assert r.json()["total"] == 3
    r = await admin.get(USERS, params={"q": created["v1"]["email"].upper()})
    assert [u["id"] for u in r.json()["items"]] == [created["v1"]["id"]]
    # LIKE wildcards typed by the caller are characters, not patterns.
    for wildcard in (f"{token}%", f"{token[:-1]}_", "%%%"):
        r = await admin.get(USERS, params={"q": wildcard})
        assert r.status_code == 200 and r.json()["total"] == 0, (wildcard, r.json()["total"])
    r = await admin.get(USERS, params={"is_active": "maybe"})
    assert_error(r, 422, "VALIDATION_ERROR")

    # page/page_size is the same window as limit/offset, on the same filtered set.
    for page, size in ((1, 2), (2, 2), (2, 1), (3, 1), (4, 1)):
        by_page = await admin.get(USERS, params={"q": token, "page": page, "page_size": size})
        by_offset = await admin.get(
            USERS, params={"q": token, "limit": size, "offset": (page - 1) * size}
        )
        assert by_page.status_code == by_offset.status_code == 200
        assert by_page.json() == by_offset.json()
        body = by_page.json()
        assert body["limit"] == size and body["offset"] == (page - 1) * size
        assert body["total"] == 3
        assert [u["id"] for u in body["items"]] == every[(page - 1) * size : page * size]


async def test_list_defaults_and_limit_caps(admin: httpx.AsyncClient) -> None:
    r = await admin.get(USERS)
    assert r.status_code == 200
    body = r.json()
    assert body["limit"] == 100 and body["offset"] == 0 and body["total"] >= 1
    user = body["items"][0]
    assert "password" not in user and "password_hash" not in user
    assert user["created_at"].endswith("Z") and user["updated_at"].endswith("Z")
    r = await admin.get(USERS, params={"limit": 1000})
    assert r.status_code == 200 and r.json()["limit"] == 1000
    for params in (
        {"limit": 1001},
        {"page_size": 1001},
        {"limit": 0},
        {"offset": -1},
        {"page": 0},
        {"limit": "ten"},
    ):
        body = assert_error(await admin.get(USERS, params=params), 422, "VALIDATION_ERROR")
        assert isinstance(body["detail"], list) and body["detail"][0]["loc"][0] == "query"


async def test_get_user(admin: httpx.AsyncClient) -> None:
    created = (await admin.post(USERS, json=new_user("operator", full_name="Ada"))).json()
    r = await admin.get(f"{USERS}/{created['id']}")
    assert r.status_code == 200
    user = r.json()
    assert user == created
    assert user["role"] == "operator" and "write:backups" in user["permissions"]
    assert user["full_name"] == "Ada" and user["is_active"] is True and user["last_login"] is None
    # Without team_ids a new user joins the default team.
    assert user["team"] == "default" and [t["name"] for t in user["teams"]] == ["default"]
    assert_error(await admin.get(f"{USERS}/987654321"), 404, "NOT_FOUND")
    assert_error(await admin.get(f"{USERS}/not-a-number"), 422, "VALIDATION_ERROR")


# -- creating ------------------------------------------------------------------------------
async def test_create_user_rejects_bad_input_and_writes_nothing(admin: httpx.AsyncClient) -> None:
    name = uid("bad-")
    base = new_user("viewer", username=name)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**base, "password": "short"}, 422, "VALIDATION_ERROR"),
        ({**base, "username": f"{name} with spaces"}, 422, "VALIDATION_ERROR"),
        ({**base, "username": "ab"}, 422, "VALIDATION_ERROR"),
        ({**base, "email": "not-an-email"}, 422, "VALIDATION_ERROR"),
        ({**base, "password_hash": "x"}, 422, "VALIDATION_ERROR"),  # nothing smuggled in
        ({**base, "is_superuser": True}, 422, "VALIDATION_ERROR"),
        ({**base, "full_name": "nul\x00byte"}, 422, "VALIDATION_ERROR"),
        ({**base, "full_name": "x" * 201}, 422, "VALIDATION_ERROR"),
        ({**base, "role": "Admin!"}, 422, "VALIDATION_ERROR"),
        ({**base, "role": "no-such-role"}, 422, "VALIDATION_ERROR"),
        ({**base, "team_ids": [987654321]}, 422, "VALIDATION_ERROR"),
        ({k: v for k, v in base.items() if k != "password"}, 422, "VALIDATION_ERROR"),
    ]
    for body, status, code in cases:
        err = assert_error(await admin.post(USERS, json=body), status, code)
        assert base["password"] not in str(err["detail"])  # input is never echoed back
    assert await count_matching(admin, name) == 0
    r = await admin.post(USERS, json=base)
    assert r.status_code == 201, r.text
    assert await count_matching(admin, name) == 1


async def test_usernames_and_emails_are_unique_case_insensitively(
    admin: httpx.AsyncClient,
) -> None:
    name = uid("Uniq-")
    first = await admin.post(USERS, json=new_user(username=name, email=f"Mixed.{name}@Example.COM"))
    assert first.status_code == 201, first.text
    assert first.json()["email"] == f"mixed.{name}@example.com".lower()
    other = uid("other-")
    for body in (
        new_user(username=other, email=f"MIXED.{name}@example.com"),
        new_user(username=name.lower(), email=f"{other}@example.com"),
        new_user(username=name.upper(), email=f"{other}@example.com"),
    ):
        assert_error(await admin.post(USERS, json=body), 409, "CONFLICT")
    assert await count_matching(admin, other) == 0
    # Changing another user's email to a case variant of a taken one is a conflict too.
    second = await admin.post(USERS, json=new_user(username=other))
    assert second.status_code == 201
    r = await admin.put(
        f"{USERS}/{second.json()['id']}", json={"email": f"mixed.{name.upper()}@example.com"}
    )
    assert_error(r, 409, "CONFLICT")
    r = await admin.get(f"{USERS}/{second.json()['id']}")
    assert r.json()["email"] == f"{other}@example.com"


async def test_concurrent_duplicate_creations_give_one_user_and_conflicts(
    api: Api, admin: httpx.AsyncClient
) -> None:
    """The uniqueness check and the insert race; the loser must get a 409, not a 500."""
    body = new_user()
    responses = await asyncio.gather(*(admin.post(USERS, json=body) for _ in range(3)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409], [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert_error(r, 409, "CONFLICT")
    assert await count_matching(admin, body["username"]) == 1
    r = await admin.get("/api/v1/audit/verify")
    assert r.json()["valid"] is True, r.json()


async def test_role_grants_are_limited_to_what_the_actor_holds(
    admin: httpx.AsyncClient, make_user: UserFactory, api: Api
) -> None:
    role = uid("useradmin-")
    roles = (await admin.get("/api/v1/users/roles/list")).json()["items"]
    viewer_perms = next(r["permissions"] for r in roles if r["name"] == "viewer")
    perms = [*viewer_perms, "read:users", "write:users"]
    r = await admin.post("/api/v1/users/roles", json={"name": role, "permissions": perms})
    assert r.status_code == 201, r.text
    manager = await make_user(role)
    async with manager.client(api) as c:
        victim = uid("esc-")
        r = await c.post(USERS, json=new_user("admin", username=victim))
        assert_error(r, 403, "FORBIDDEN")
        assert await count_matching(c, victim) == 0
        r = await c.put(f"{USERS}/{manager.id}", json={"role": "admin"})
        assert_error(r, 403, "FORBIDDEN")
        r = await c.get(f"{USERS}/{manager.id}")
        assert r.json()["role"] == role
        # What the role does hold, it may hand out.
        r = await c.post(USERS, json=new_user("viewer", username=victim))
        assert r.status_code == 201, r.text


# -- updating ------------------------------------------------------------------------------
async def test_update_user_and_sessions_follow(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("viewer")
    team = await admin.post("/api/v1/users/teams", json={"name": uid("team-")})
    assert team.status_code == 201
    url = f"{USERS}/{user.id}"

    bad: list[dict[str, Any]] = [
        {"role": "no-such-role"},
        {"team_ids": [987654321]},
        {"password": "short"},
        {"email": "nope"},
        {"username": "renamed"},  # not updatable
        {"is_active": "sometimes"},
        {"full_name": "bell\x07"},
    ]
    for body in bad:
        assert_error(await admin.put(url, json=body), 422, "VALIDATION_ERROR")
    assert_error(await admin.put(f"{USERS}/987654321", json={"full_name": "x"}), 404, "NOT_FOUND")
    unchanged = (await admin.get(url)).json()
    assert unchanged["role"] == "viewer" and unchanged["team"] == "default"
    async with user.client(api) as c:
        assert (await c.get("/api/v1/auth/me")).status_code == 200

    r = await admin.put(
        url,
        json={"full_name": "Grace H", "role": "operator", "team_ids": [team.json()["id"]]},
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["full_name"] == "Grace H" and updated["role"] == "operator"
    assert [t["id"] for t in updated["teams"]] == [team.json()["id"]]
    assert updated["updated_at"] >= unchanged["updated_at"]
    # A role change ends the sessions issued before it, on the very next request.
    async with user.client(api) as c:
        assert_error(await c.get("/api/v1/auth/me"), 401, "UNAUTHORIZED")

    r = await admin.put(url, json={"is_active": False})
    assert r.status_code == 200 and r.json()["is_active"] is False
    async with api.client() as c:
        r = await c.post(
            "/api/v1/auth/login", json={"username": user.username, "password": user.password}
        )
    assert_error(r, 403, "FORBIDDEN")

    r = await admin.get(
        "/api/v1/audit/logs", params={"action": "user.update", "resource_id": user.id}
    )
    changes = [item["details"]["changed"] for item in r.json()["items"]]
    assert changes == [["is_active"], ["full_name", "role", "teams"]]


async def test_nobody_can_disable_or_delete_themselves(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    me = await make_user("admin")
    async with me.client(api) as c:
        assert_error(await c.put(f"{USERS}/{me.id}", json={"is_active": False}), 409, "CONFLICT")
        assert_error(await c.delete(f"{USERS}/{me.id}"), 409, "CONFLICT")
        r = await c.get(f"{USERS}/{me.id}")
        assert r.status_code == 200 and r.json()["is_active"] is True
        key = await c.post("/api/v1/admin/tokens", json={"name": uid("k-"), "role": "viewer"})
        assert key.status_code == 201, key.text
        # Lowering one's own role is allowed while other admins remain.
        r = await c.put(f"{USERS}/{me.id}", json={"role": "viewer"})
        assert r.status_code == 200 and r.json()["role"] == "viewer"
    # Another admin may delete them; their API keys go with them.
    async with api.client({"X-API-Key": key.json()["key"]}) as c:
        assert (await c.get("/api/v1/auth/me")).status_code == 200
        assert (await admin.delete(f"{USERS}/{me.id}")).status_code == 204
        assert_error(await c.get("/api/v1/auth/me"), 401, "UNAUTHORIZED")


# -- deleting ------------------------------------------------------------------------------
async def test_delete_user_keeps_their_audit_rows(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    gone = await make_user("operator")  # logging in wrote an auth.login row as them
    r = await admin.delete(f"{USERS}/{gone.id}")
    assert r.status_code == 204 and r.content == b""
    assert_error(await admin.get(f"{USERS}/{gone.id}"), 404, "NOT_FOUND")
    assert_error(await admin.delete(f"{USERS}/{gone.id}"), 404, "NOT_FOUND")
    assert_error(await admin.put(f"{USERS}/{gone.id}", json={"full_name": "x"}), 404, "NOT_FOUND")
    async with gone.client(api) as c:
        assert_error(await c.get("/api/v1/auth/me"), 401, "UNAUTHORIZED")

    r = await admin.get("/api/v1/audit/logs", params={"user_id": gone.id})
    actions = {item["action"] for item in r.json()["items"]}
    assert "auth.login" in actions
    r = await admin.get(
        "/api/v1/audit/logs", params={"action": "user.delete", "resource_id": gone.id}
    )
    (row,) = [i for i in r.json()["items"] if i["details"] == {"username": gone.username}]
    assert row["username"] == "admin" and row["outcome"] == "success"
    assert (await admin.get("/api/v1/audit/verify")).json()["valid"] is True


async def test_a_deleted_users_id_is_never_given_to_someone_else(
    api: Api, admin: httpx.AsyncClient
) -> None:
    """The trail keeps user ids after the user is gone, so an id must never be reused:
    a newcomer would inherit the history of the deleted account."""
    first = await admin.post(USERS, json=new_user())
    assert (await admin.delete(f"{USERS}/{first.json()['id']}")).status_code == 204
    second = await admin.post(USERS, json=new_user())
    assert second.json()["id"] != first.json()["id"]


# -- who may ------------------------------------------------------------------------------
USER_ROUTES = [
    ("GET", USERS, None),
    ("GET", f"{USERS}/1", None),
    ("POST", USERS, new_user()),
    ("PUT", f"{USERS}/1", {"full_name": "x"}),
    ("DELETE", f"{USERS}/1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), USER_ROUTES)
async def test_user_routes_are_admin_only(
    api: Api,
    admin: httpx.AsyncClient,
    viewer: CreatedUser,
    operator: CreatedUser,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    for who in (viewer, operator):
        async with who.client(api) as c:
            r = await c.request(method, path, json=body)
        err = assert_error(r, 403, "FORBIDDEN")
        assert "users" in err["detail"]
    async with api.client() as c:
        r = await c.request(method, path, json=body)
        assert_error(r, 401, "UNAUTHORIZED")
        assert r.headers["www-authenticate"] == "Bearer"
        r = await c.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
        assert_error(r, 401, "UNAUTHORIZED")
    if method == "POST":
        assert await count_matching(admin, body["username"]) == 0  # type: ignore[index]
    r = await admin.get(f"{USERS}/1")
    assert r.status_code == 200 and r.json()["is_active"] is True


# -- the last active admin -----------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
async def test_last_active_admin_cannot_be_demoted_disabled_or_deleted(
    backend: str, tmp_path: Path
) -> None:
    async with own_app(backend, tmp_path) as own:
        root_headers = await own.headers_for("admin", ADMIN_PASSWORD)
        async with own.client(root_headers) as root:
            root_id = (await root.get("/api/v1/auth/me")).json()["id"]
            # A role holding every permission, but not named admin: the one way another
            # account can act on the only admin.
            perms = [
                p["name"]
                for p in (await root.get("/api/v1/users/permissions/list")).json()["items"]
            ]
            assert (
                await root.post(
                    "/api/v1/users/roles", json={"name": "superuser", "permissions": perms}
                )
            ).status_code == 201
            sup = new_user("superuser")
            assert (await root.post(USERS, json=sup)).status_code == 201
            # Demoting oneself as the only admin is refused too.
            r = await root.put(f"{USERS}/{root_id}", json={"role": "viewer"})
            assert "last active admin" in assert_error(r, 409, "CONFLICT")["detail"]

        sup_headers = await own.headers_for(sup["username"], sup["password"])
        async with own.client(sup_headers) as c:
            for method, body in (
                ("PUT", {"role": "operator"}),
                ("PUT", {"is_active": False}),
                ("PUT", {"role": "viewer", "is_active": False}),
                ("DELETE", None),
            ):
                r = await c.request(method, f"{USERS}/{root_id}", json=body)
                assert_error(r, 409, "CONFLICT")
            r = await c.get(f"{USERS}/{root_id}")
            assert r.json()["role"] == "admin" and r.json()["is_active"] is True
            assert (await c.get(USERS, params={"role": "admin"})).json()["total"] == 1

            # With a second active admin, the first may go.
            second = (await c.post(USERS, json=new_user("admin"))).json()
            r = await c.put(f"{USERS}/{root_id}", json={"role": "operator"})
            assert r.status_code == 200 and r.json()["role"] == "operator"
            # An inactive admin does not count.
            r = await c.put(f"{USERS}/{second['id']}", json={"is_active": False})
            assert_error(r, 409, "CONFLICT")
            assert_error(await c.delete(f"{USERS}/{second['id']}"), 409, "CONFLICT")
            r = await c.put(f"{USERS}/{root_id}", json={"role": "admin"})
            assert r.status_code == 200
            assert (await c.delete(f"{USERS}/{second['id']}")).status_code == 204
            assert (await c.get(USERS, params={"role": "admin"})).json()["total"] == 1

            r = await c.get("/api/v1/audit/verify")
            assert r.json()["valid"] is True, r.json()


async def test_user_changes_are_announced_to_user_admins_only(
    api: Api, admin: httpx.AsyncClient
) -> None:
    from opscenter.core.principal import Principal
    from opscenter.realtime.service import visible

    ctx = api.app.state.ctx
    name = f"ev{uid()}"
    async with ctx.events.subscribe() as queue:
        created = await admin.post(
            "/api/v1/users",
            json={"username": name, "email": f"{name}@example.com", "password": "pw-" + uid() * 2},
        )
        assert created.status_code == 201, created.text
        user_id = created.json()["id"]
        assert (await admin.put(f"/api/v1/users/{user_id}", json={"is_active": False})).is_success
        assert (await admin.delete(f"/api/v1/users/{user_id}")).status_code == 204
        refused = await admin.post("/api/v1/users", json={"username": name})
        assert refused.status_code == 422
        await asyncio.sleep(0.05)  # published after each response
        events = [queue.get_nowait() for _ in range(queue.qsize())]
    mine = [(e.type, e.data["user_id"]) for e in events if e.type.startswith("user.")]
    assert mine == [("user.created", user_id), ("user.updated", user_id), ("user.deleted", user_id)]

    def principal(*permissions: str) -> Principal:
        return Principal(1, "p", "r", frozenset(permissions), frozenset({1}))

    created_event = next(e for e in events if e.type == "user.created")
    assert visible(created_event, principal("read:users"))
    assert not visible(created_event, principal("read:backups"))
