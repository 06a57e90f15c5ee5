"""Teams, roles and the permission catalogue: admin-only writes, clear errors that write
nothing, and a hash chain that stays whole under concurrent writes. Both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import Api, CreatedUser, UserFactory
from tests.core.helpers import assert_error, role_user, uid

TEAMS = "/api/v1/users/teams"
TEAM_LIST = "/api/v1/users/teams/list"
ROLES = "/api/v1/users/roles"
ROLE_LIST = "/api/v1/users/roles/list"
PERMISSIONS = "/api/v1/users/permissions/list"


@pytest.fixture
async def viewer(api: Api, admin_headers: dict[str, str]) -> CreatedUser:
    return await role_user(api, admin_headers, "viewer")


@pytest.fixture
async def operator(api: Api, admin_headers: dict[str, str]) -> CreatedUser:
    return await role_user(api, admin_headers, "operator")


async def teams_named(client: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    r = await client.get(TEAM_LIST, params={"limit": 1000})
    assert r.status_code == 200, r.text
    return [t for t in r.json()["items"] if token.lower() in t["name"].lower()]


async def roles_by_name(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    r = await client.get(ROLE_LIST)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "total", "limit", "offset", "total_estimated"}
    assert body["total"] == len(body["items"])
    return {role["name"]: role for role in body["items"]}


async def new_member(admin: httpx.AsyncClient) -> dict[str, Any]:
    name = uid("m-")
    r = await admin.post(
        "/api/v1/users",
        json={"username": name, "email": f"{name}@example.com", "password": f"pw-{name}-pad"},
    )
    assert r.status_code == 201, r.text
    member: dict[str, Any] = r.json()
    return member


# -- teams ---------------------------------------------------------------------------------
async def test_create_and_list_teams(admin: httpx.AsyncClient, viewer: CreatedUser) -> None:
    name = uid("Team ")
    r = await admin.post(
        TEAMS,
        json={"name": f"  {name}  ", "description": "Night shift", "member_ids": [viewer.id]},
    )
    assert r.status_code == 201, r.text
    team = r.json()
    assert team["name"] == name  # surrounding whitespace is trimmed
    assert team["description"] == "Night shift"
    assert [m["id"] for m in team["members"]] == [viewer.id]
    assert set(team["members"][0]) == {"id", "username", "full_name"}
    assert team["created_at"].endswith("Z")
    assert await teams_named(admin, name) == [team]

    r = await admin.get(TEAM_LIST, params={"page": 1, "page_size": 1})
    body = r.json()
    assert body["limit"] == 1 and body["offset"] == 0 and len(body["items"]) == 1
    assert body["total"] >= 2  # the default team and this one
    assert_error(await admin.get(TEAM_LIST, params={"limit": 1001}), 422, "VALIDATION_ERROR")
    r = await admin.get(f"/api/v1/users/{viewer.id}")
    assert name in [t["name"] for t in r.json()["teams"]]


async def test_team_bad_input_writes_nothing(admin: httpx.AsyncClient) -> None:
    token = uid("badteam")
    cases: list[tuple[Any, int, str]] = [
        ({"name": ""}, 422, "VALIDATION_ERROR"),
        ({"name": "   "}, 422, "VALIDATION_ERROR"),
        ({"name": token + "x" * (101 - len(token))}, 422, "VALIDATION_ERROR"),  # column: 100
        ({"name": token, "description": "d" * 501}, 422, "VALIDATION_ERROR"),  # column: 500
        ({"name": token, "member_ids": [987654321]}, 422, "VALIDATION_ERROR"),
        ({"name": token, "member_ids": ["one"]}, 422, "VALIDATION_ERROR"),
        ({"name": token, "owner_id": 1}, 422, "VALIDATION_ERROR"),
        ({"name": token + "\x00"}, 422, "VALIDATION_ERROR"),
        ({"name": token, "description": "tab\tok but bell \x07 is not"}, 422, "VALIDATION_ERROR"),
        ({"description": "no name"}, 422, "VALIDATION_ERROR"),
        ([token], 422, "VALIDATION_ERROR"),
    ]
    for body, status, code in cases:
        assert_error(await admin.post(TEAMS, json=body), status, code)
    assert await teams_named(admin, token) == []

    longest = token + "x" * (100 - len(token))
    r = await admin.post(TEAMS, json={"name": token, "description": "d" * 500})
    assert r.status_code == 201, r.text
    assert (await admin.post(TEAMS, json={"name": longest})).status_code == 201
    for dup in (token, token.upper(), f" {token} "):
        err = assert_error(await admin.post(TEAMS, json={"name": dup}), 409, "CONFLICT")
        assert "already exists" in err["detail"]
    assert len(await teams_named(admin, token)) == 2


async def test_set_team_members(admin: httpx.AsyncClient, viewer: CreatedUser) -> None:
    one, two = await new_member(admin), await new_member(admin)
    team = (await admin.post(TEAMS, json={"name": uid("crew-"), "member_ids": [one["id"]]})).json()
    url = f"{TEAMS}/{team['id']}/members"

    r = await admin.put(url, json={"member_ids": [two["id"], viewer.id, two["id"]]})
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["members"]] == sorted([two["id"], viewer.id])
    assert (await teams_named(admin, team["name"]))[0]["members"] == r.json()["members"]

    before = r.json()["members"]
    for body in (
        {"member_ids": [two["id"], 987654321]},
        {"member_ids": "all"},
        {},
        {"member_ids": [], "name": "renamed"},
    ):
        assert_error(await admin.put(url, json=body), 422, "VALIDATION_ERROR")
    assert_error(
        await admin.put(f"{TEAMS}/987654321/members", json={"member_ids": []}), 404, "NOT_FOUND"
    )
    assert_error(
        await admin.put(f"{TEAMS}/x/members", json={"member_ids": []}), 422, "VALIDATION_ERROR"
    )
    assert (await teams_named(admin, team["name"]))[0]["members"] == before

    r = await admin.put(url, json={"member_ids": []})
    assert r.status_code == 200 and r.json()["members"] == []
    r = await admin.get(f"/api/v1/users/{two['id']}")
    assert team["id"] not in [t["id"] for t in r.json()["teams"]]

    r = await admin.get(
        "/api/v1/audit/logs", params={"action": "team.members_update", "resource_id": team["id"]}
    )
    assert [i["details"]["member_ids"] for i in r.json()["items"]] == [
        [],
        sorted([two["id"], viewer.id]),
    ]


# -- roles and permissions -----------------------------------------------------------------
async def test_roles_list_and_custom_role(admin: httpx.AsyncClient) -> None:
    roles = await roles_by_name(admin)
    assert {"admin", "operator", "viewer"} <= set(roles)
    assert all(roles[n]["is_builtin"] for n in ("admin", "operator", "viewer"))
    assert roles["admin"]["user_count"] >= 1
    assert "write:users" in roles["admin"]["permissions"]
    assert "write:users" not in roles["operator"]["permissions"]
    assert not any(p.startswith("write:") for p in roles["viewer"]["permissions"])

    name = uid("dba-")
    r = await admin.post(
        ROLES,
        json={
            "name": name,
            "description": "Backups only",
            "permissions": ["write:backups", "read:backups", "read:backups"],
        },
    )
    assert r.status_code == 201, r.text
    role = r.json()
    assert role["permissions"] == ["read:backups", "write:backups"]  # sorted, deduplicated
    assert role["is_builtin"] is False and role["user_count"] == 0

    member = uid("dbauser-")
    r = await admin.post(
        "/api/v1/users",
        json={
            "username": member,
            "email": f"{member}@example.com",
            "password": f"pw-{member}",
            "role": name,
        },
    )
    assert r.status_code == 201 and r.json()["permissions"] == role["permissions"]
    assert (await roles_by_name(admin))[name]["user_count"] == 1


async def test_role_bad_input_writes_nothing(admin: httpx.AsyncClient) -> None:
    name = uid("badrole-")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"name": name, "permissions": ["read:nothing"]}, 422, "VALIDATION_ERROR"),
        ({"name": name, "permissions": ["read:backups", "fly:planes"]}, 422, "VALIDATION_ERROR"),
        ({"name": name, "permissions": []}, 422, "VALIDATION_ERROR"),
        ({"name": name}, 422, "VALIDATION_ERROR"),
        (
            {"name": name, "permissions": ["read:backups"], "description": "d" * 501},
            422,
            "VALIDATION_ERROR",
        ),
        ({"name": "Has Spaces", "permissions": ["read:backups"]}, 422, "VALIDATION_ERROR"),
        ({"name": "x", "permissions": ["read:backups"]}, 422, "VALIDATION_ERROR"),
        (
            {"name": name, "permissions": ["read:backups"], "is_builtin": True},
            422,
            "VALIDATION_ERROR",
        ),
        ({"name": name, "permissions": "read:backups"}, 422, "VALIDATION_ERROR"),
        ({"name": "admin", "permissions": ["read:backups"]}, 409, "CONFLICT"),
        ({"name": "viewer", "permissions": ["read:backups"]}, 409, "CONFLICT"),
    ]
    for body, status, code in cases:
        assert_error(await admin.post(ROLES, json=body), status, code)
    roles = await roles_by_name(admin)
    assert name not in roles
    # The built-in roles were not touched by the refused duplicates.
    assert (
        "read:backups" in roles["viewer"]["permissions"] and len(roles["admin"]["permissions"]) > 1
    )


async def test_permissions_catalogue(api: Api, viewer: CreatedUser) -> None:
    async with viewer.client(api) as c:
        r = await c.get(PERMISSIONS)
    assert r.status_code == 200
    body = r.json()
    names = [p["name"] for p in body["items"]]
    assert body["total"] == len(names) == len(set(names))
    assert {
        "read:users",
        "write:users",
        "read:audit",
        "execute:commands",
        "scope:all-teams",
        "download:backups",
        "access:host_files",
    } <= set(names)
    assert all(p["description"] for p in body["items"])
    verbs = {"read", "write", "execute", "download", "access", "scope", "scan"}
    assert {name.split(":")[0] for name in names} == verbs


# -- who may -------------------------------------------------------------------------------
WRITES = [
    ("POST", TEAMS, {"name": "never-created-team"}),
    ("PUT", f"{TEAMS}/1/members", {"member_ids": []}),
    ("POST", ROLES, {"name": "never-created-role", "permissions": ["read:backups"]}),
]
READS = [TEAM_LIST, ROLE_LIST, PERMISSIONS]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_team_and_role_writes_are_admin_only(
    api: Api,
    admin: httpx.AsyncClient,
    viewer: CreatedUser,
    operator: CreatedUser,
    method: str,
    path: str,
    body: dict[str, Any],
) -> None:
    before_default = (await admin.get(TEAM_LIST)).json()["items"][0]
    for who in (viewer, operator):
        async with who.client(api) as c:
            assert_error(await c.request(method, path, json=body), 403, "FORBIDDEN")
    async with api.client() as c:
        assert_error(await c.request(method, path, json=body), 401, "UNAUTHORIZED")
    assert await teams_named(admin, "never-created-team") == []
    assert "never-created-role" not in await roles_by_name(admin)
    assert (await admin.get(TEAM_LIST)).json()["items"][0] == before_default


@pytest.mark.parametrize("path", READS)
async def test_team_and_role_reads(
    api: Api, viewer: CreatedUser, operator: CreatedUser, path: str
) -> None:
    """Viewers and operators see teams, roles and permissions (read:teams, read:roles)."""
    for who in (viewer, operator):
        async with who.client(api) as c:
            r = await c.get(path)
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"items", "total", "limit", "offset", "total_estimated"}
    async with api.client() as c:
        assert_error(await c.get(path), 401, "UNAUTHORIZED")


# -- concurrency ---------------------------------------------------------------------------
async def test_concurrent_writes_keep_the_audit_chain_whole(admin: httpx.AsyncClient) -> None:
    token = uid("burst")
    responses = await asyncio.gather(
        *(admin.post(TEAMS, json={"name": f"{token}-{i:02d}"}) for i in range(30))
    )
    assert [r.status_code for r in responses] == [201] * 30, [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(await teams_named(admin, token)) == 30

    # The same name thirty times at once: one team, the others a clean 409.
    dup = await asyncio.gather(
        *(admin.post(TEAMS, json={"name": f"{token}-dup"}) for _ in range(10))
    )
    assert sorted(r.status_code for r in dup) == [201] + [409] * 9, [r.text for r in dup]
    for r in dup:
        if r.status_code == 409:
            assert_error(r, 409, "CONFLICT")

    r = await admin.get("/api/v1/audit/verify")
    report = r.json()
    assert r.status_code == 200 and report["valid"] is True, report
    assert report["first_bad_id"] is None and report["problem"] is None
    r = await admin.get("/api/v1/audit/search", params={"q": token, "limit": 100})
    audited = {int(i["resource_id"]) for i in r.json()["items"] if i["action"] == "team.create"}
    assert ids <= audited and len(audited) == 31


async def test_operators_and_viewers_list_only_their_own_teams(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    mine = (await admin.post(TEAMS, json={"name": uid("Mine ")})).json()
    theirs = (await admin.post(TEAMS, json={"name": uid("Theirs ")})).json()
    for role in ("operator", "viewer"):
        user = await make_user(role, team_ids=[mine["id"]])
        async with user.client(api) as c:
            r = await c.get(TEAM_LIST, params={"limit": 1000})
        assert r.status_code == 200, r.text
        assert [t["id"] for t in r.json()["items"]] == [mine["id"]], role
        assert r.json()["total"] == 1
    assert await teams_named(admin, theirs["name"]) == [theirs]  # an admin sees every team
