"""The audit trail: every mutation and refusal recorded with who, what and from where; the
three read views, search and export; the hash chain proven against real tampering."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from opscenter.audit.checkpoints import checkpoint
from opscenter.audit.router import CSV_COLUMNS
from opscenter.audit.service import _digest
from opscenter.models import AuditCheckpoint, AuditLog
from tests.conftest import ADMIN_PASSWORD, Api, CreatedUser, UserFactory
from tests.core.helpers import BACKENDS, assert_error, own_app, role_user, uid

LOGS = "/api/v1/audit/logs"
VIEWS = ("/api/v1/audit/logs", "/api/v1/audit/events", "/api/v1/admin/audit-logs")
EXPORT = "/api/v1/audit/export"
VERIFY = "/api/v1/audit/verify"
SEARCH = "/api/v1/audit/search"
HEX64 = set("0123456789abcdef")


@pytest.fixture
async def viewer(api: Api, admin_headers: dict[str, str]) -> CreatedUser:
    return await role_user(api, admin_headers, "viewer")


@pytest.fixture
async def operator(api: Api, admin_headers: dict[str, str]) -> CreatedUser:
    return await role_user(api, admin_headers, "operator")


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def only_row(admin: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await admin.get(LOGS, params=params)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 1, (params, items)
    row: dict[str, Any] = items[0]
    return row


# -- what is recorded ----------------------------------------------------------------------
async def test_every_mutation_is_recorded_with_actor_and_origin(admin: httpx.AsyncClient) -> None:
    me = (await admin.get("/api/v1/auth/me")).json()
    seen: list[tuple[str, str, str]] = []  # (action, resource_id, request_id)

    async def call(method: str, path: str, action: str, body: Any = None) -> httpx.Response:
        request_id = uid("req-")
        r = await admin.request(
            method,
            path,
            json=body,
            headers={"X-Request-ID": request_id, "User-Agent": "audit-test/1.0"},
        )
        assert r.status_code in (200, 201, 204), r.text
        assert r.headers["x-request-id"] == request_id
        resource = path.rstrip("/").split("/")[-1] if r.status_code == 204 else None
        if resource is None:
            resource = str(r.json()["id"])
        seen.append((action, resource, request_id))
        return r

    name = uid("aud-")
    user = await call(
        "POST",
        "/api/v1/users",
        "user.create",
        {"username": name, "email": f"{name}@example.com", "password": f"pw-{name}"},
    )
    uid_ = user.json()["id"]
    team = await call("POST", "/api/v1/users/teams", "team.create", {"name": name})
    await call(
        "PUT",
        f"/api/v1/users/teams/{team.json()['id']}/members",
        "team.members_update",
        {"member_ids": [uid_]},
    )
    await call(
        "POST",
        "/api/v1/users/roles",
        "role.create",
        {"name": name, "permissions": ["read:backups"]},
    )
    await call("PUT", f"/api/v1/users/{uid_}", "user.update", {"full_name": "Audited"})
    await call("DELETE", f"/api/v1/users/{uid_}", "user.delete")

    for action, resource_id, request_id in seen:
        row = await only_row(admin, action=action, resource_id=resource_id)
        assert row["request_id"] == request_id
        assert row["user_id"] == me["id"] and row["username"] == "admin"
        assert row["api_key_id"] is None
        assert row["ip_address"] == "127.0.0.1"
        assert row["user_agent"] == "audit-test/1.0"
        assert row["outcome"] == "success"
        assert row["resource_type"] == action.split(".")[0]
        assert row["created_at"].endswith("Z")
        assert len(row["hash"]) == 64 and set(row["hash"]) <= HEX64
    create = await only_row(admin, action="user.create", resource_id=str(uid_))
    assert create["details"] == {"username": name, "role": "viewer"}
    assert "password" not in json.dumps(create)  # neither the password nor its hash


async def test_access_denied_is_recorded_after_the_refusal(
    api: Api, admin: httpx.AsyncClient, viewer: CreatedUser, operator: CreatedUser
) -> None:
    cases = [
        (viewer, "GET", "/api/v1/users", None, "read:users"),
        (viewer, "GET", EXPORT, None, "read:audit"),
        (operator, "POST", "/api/v1/users/teams", {"name": uid("denied-")}, "write:teams"),
    ]
    for who, method, path, body, permission in cases:
        request_id = uid("deny-")
        async with who.client(api) as c:
            r = await c.request(method, path, json=body, headers={"X-Request-ID": request_id})
        assert_error(r, 403, "FORBIDDEN")
        # Written after the response, in its own transaction: read it with a new request.
        r = await admin.get(LOGS, params={"action": "access.denied", "user_id": who.id})
        rows = [i for i in r.json()["items"] if i["request_id"] == request_id]
        assert len(rows) == 1, r.json()
        row = rows[0]
        assert row["outcome"] == "denied" and row["username"] == who.username
        assert row["details"] == {"permission": permission, "method": method, "path": path}
        assert row["ip_address"] == "127.0.0.1"
    r = await admin.get(SEARCH, params={"q": cases[2][3]["name"]})  # type: ignore[index]
    assert [i["action"] for i in r.json()["items"]] == []  # the refused team left no trace
    assert (await admin.get(VERIFY)).json()["valid"] is True


# -- reading it ----------------------------------------------------------------------------
async def test_three_views_filters_and_cursor(admin: httpx.AsyncClient) -> None:
    me = (await admin.get("/api/v1/auth/me")).json()
    token = uid("view-")
    for i in range(5):
        assert (
            await admin.post("/api/v1/users/teams", json={"name": f"{token}{i}"})
        ).status_code == 201
    params = {"action": "team.create", "resource_type": "team", "user_id": me["id"], "limit": 5}
    bodies = []
    for view in VIEWS:
        r = await admin.get(view, params=params)
        assert r.status_code == 200, r.text
        bodies.append(r.json())
    assert bodies[0] == bodies[1] == bodies[2]
    body = bodies[0]
    assert set(body) == {"items", "total", "limit", "offset", "next_cursor", "total_estimated"}
    ids = [i["id"] for i in body["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 5  # newest first
    assert all(i["action"] == "team.create" and i["user_id"] == me["id"] for i in body["items"])
    assert [i["details"]["name"] for i in body["items"]] == [
        f"{token}{n}" for n in range(4, -1, -1)
    ]

    # Cursor paging: the next page is everything older than the cursor.
    first = (await admin.get(LOGS, params={**params, "limit": 2})).json()
    assert first["next_cursor"] == first["items"][-1]["id"]
    second = (
        await admin.get(LOGS, params={**params, "limit": 2, "cursor": first["next_cursor"]})
    ).json()
    by_offset = (await admin.get(LOGS, params={**params, "limit": 2, "offset": 2})).json()
    assert [i["id"] for i in second["items"]] == [i["id"] for i in by_offset["items"]]
    assert all(i["id"] < first["next_cursor"] for i in second["items"])
    r = await admin.get(
        LOGS, params={"action": "team.create", "resource_id": body["items"][0]["resource_id"]}
    )
    assert r.json()["total"] == 1 and r.json()["next_cursor"] is None
    for outcome in ("success", "failure", "denied"):
        r = await admin.get(LOGS, params={"outcome": outcome, "limit": 20})
        assert all(i["outcome"] == outcome for i in r.json()["items"])


async def test_search(admin: httpx.AsyncClient) -> None:
    token = uid("Srch")
    team = (await admin.post("/api/v1/users/teams", json={"name": f"{token} ops"})).json()
    for q in (token, token.upper(), token.lower()):
        r = await admin.get(SEARCH, params={"q": q})
        assert r.status_code == 200, r.text
        assert [(i["action"], i["resource_id"]) for i in r.json()["items"]] == [
            ("team.create", str(team["id"]))
        ]
    # Filters combine with the text; wildcards are literal characters.
    r = await admin.get(SEARCH, params={"q": token, "action": "user.create"})
    assert r.json()["total"] == 0
    for q in (f"{token}%", f"{token[:-1]}_", "%_%_%_%_%_%_%"):
        r = await admin.get(SEARCH, params={"q": q})
        assert r.status_code == 200 and r.json()["total"] == 0, q
    for params in ({}, {"q": ""}, {"q": "x" * 201}):
        assert_error(await admin.get(SEARCH, params=params), 422, "VALIDATION_ERROR")


async def test_filter_validation(admin: httpx.AsyncClient) -> None:
    bad: list[dict[str, Any]] = [
        {"start_date": "2030-01-02T00:00:00Z", "end_date": "2030-01-01T00:00:00Z"},
        {"start_date": "yesterday"},
        {"outcome": "maybe"},
        {"user_id": 0},
        {"cursor": 0},
        {"action": "x" * 101},
        {"resource_type": "x" * 65},
    ]
    for path in (*VIEWS, EXPORT, SEARCH):
        for params in [*bad, {"limit": 1001}] if path != EXPORT else bad:
            if path == SEARCH:
                params = {**params, "q": "x"}
            r = await admin.get(path, params=params)
            assert_error(r, 422, "VALIDATION_ERROR")
    # A date without an offset is UTC, alone or next to one with an offset.
    for params in (
        {"start_date": "2000-01-01T00:00:00"},
        {"start_date": "2000-01-01T00:00:00", "end_date": "2100-01-01T00:00:00Z"},
        {"start_date": "2000-01-01T02:00:00+02:00", "end_date": "2100-01-01"},
    ):
        r = await admin.get(LOGS, params=params)
        assert r.status_code == 200, r.text
        assert r.json()["total"] >= 1
    r = await admin.get(LOGS, params={"start_date": "2100-01-01T00:00:00"})
    assert r.json()["total"] == 0


async def test_export_csv_and_json_by_date_range(admin: httpx.AsyncClient) -> None:
    token = uid("exp-")

    async def team(suffix: str) -> str:
        r = await admin.post("/api/v1/users/teams", json={"name": token + suffix})
        assert r.status_code == 201
        await asyncio.sleep(0.02)
        return str(r.json()["id"])

    before = await team("a")
    start = datetime.now(UTC)
    await asyncio.sleep(0.02)
    inside = [await team("b"), await team("c")]
    end = datetime.now(UTC)
    await asyncio.sleep(0.02)
    after = await team("d")
    window = {"start_date": z(start), "end_date": z(end)}

    r = await admin.get(EXPORT, params={**window, "format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="audit-export.csv"'
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert r.text.splitlines()[0].split(",") == CSV_COLUMNS
    csv_teams = [row["resource_id"] for row in rows if row["action"] == "team.create"]
    assert csv_teams == inside[::-1]  # newest first, nothing outside the window
    assert before not in csv_teams and after not in csv_teams
    for row in rows:
        assert z(start) <= row["created_at"] <= z(end)
        json.loads(row["details"])
        assert len(row["hash"]) == 64

    r = await admin.get(EXPORT, params={**window, "format": "json"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["content-disposition"] == 'attachment; filename="audit-export.json"'
    items = r.json()
    assert [str(i["id"]) for i in items] == [row["id"] for row in rows]
    assert [i["resource_id"] for i in items if i["action"] == "team.create"] == inside[::-1]
    assert set(items[0]) == set(CSV_COLUMNS) | {"details"}

    # The default format is CSV; an empty range is a header or an empty array.
    r = await admin.get(EXPORT, params={"end_date": "2001-01-01T00:00:00Z"})
    assert r.text.strip() == ",".join(CSV_COLUMNS)
    r = await admin.get(EXPORT, params={"end_date": "2001-01-01T00:00:00Z", "format": "json"})
    assert r.json() == []
    assert_error(await admin.get(EXPORT, params={"format": "xml"}), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "path", [*VIEWS, f"{SEARCH}?q=x", f"{EXPORT}?format=csv", f"{EXPORT}?format=json", VERIFY]
)
async def test_audit_routes_need_read_audit(
    api: Api, viewer: CreatedUser, operator: CreatedUser, path: str
) -> None:
    async with viewer.client(api) as c:
        assert_error(await c.get(path), 403, "FORBIDDEN")
    async with operator.client(api) as c:  # operators hold read:audit
        assert (await c.get(path)).status_code == 200
    async with api.client() as c:
        assert_error(await c.get(path), 401, "UNAUTHORIZED")


async def test_verify_reports_an_intact_chain(admin: httpx.AsyncClient) -> None:
    report = (await admin.get(VERIFY)).json()
    assert report["valid"] is True and report["checked"] >= 1, report
    assert report["first_bad_id"] is None and report["problem"] is None
    newest = (await admin.get(LOGS, params={"limit": 1})).json()["items"][0]
    assert report["head_hash"] == newest["hash"]
    assert report["checked"] == (await admin.get(LOGS)).json()["total"]


# -- tampering -----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
async def test_tampering_is_refused_and_then_detected(backend: str, tmp_path: Path) -> None:
    async with own_app(backend, tmp_path) as own:
        engine = own.app.state.ctx.db.engine
        table = AuditLog.__table__
        async with own.client(await own.headers_for("admin", ADMIN_PASSWORD)) as admin:
            for i in range(4):
                r = await admin.post("/api/v1/users/teams", json={"name": f"tamper-{i}"})
                assert r.status_code == 201

            async def verify() -> dict[str, Any]:
                r = await admin.get(VERIFY)
                assert r.status_code == 200
                report: dict[str, Any] = r.json()
                return report

            async def execute(stmt: Any) -> None:
                async with engine.begin() as conn:
                    await conn.execute(stmt)

            assert (await verify())["valid"] is True
            async with engine.connect() as conn:
                rows = (await conn.execute(sa.select(table).order_by(table.c.id))).mappings().all()
            assert len(rows) == 5  # the login and four teams
            target, following = rows[2], rows[3]

            # The database itself refuses to change the trail.
            for stmt in (
                sa.update(table).where(table.c.id == target["id"]).values(action="forged"),
                sa.delete(table).where(table.c.id == target["id"]),
            ):
                with pytest.raises(DBAPIError, match="append-only"):
                    await execute(stmt)
            assert (await verify())["valid"] is True

            # Someone with the database's owner rights drops the protection.
            drops = (
                ["DROP TRIGGER audit_logs_no_update ON audit_logs"]
                if backend == "postgres"
                else ["DROP TRIGGER audit_logs_no_update", "DROP TRIGGER audit_logs_no_delete"]
            )
            for drop in drops:
                await execute(sa.text(drop))

            # An edited row fails its own hash.
            forged = {**target["details"], "name": "forged"}
            await execute(sa.update(table).where(table.c.id == target["id"]).values(details=forged))
            report = await verify()
            assert report["valid"] is False and report["first_bad_id"] == target["id"]
            assert "edited" in report["problem"] and report["checked"] == 2

            # Re-hashing the edited row moves the break to the link of the next one.
            row = AuditLog(**{**target, "details": forged})
            await execute(
                sa.update(table).where(table.c.id == target["id"]).values(hash=_digest(row))
            )
            report = await verify()
            assert report["valid"] is False and report["first_bad_id"] == following["id"]

            # Put back exactly as written: intact again.
            await execute(
                sa.update(table)
                .where(table.c.id == target["id"])
                .values(details=target["details"], hash=target["hash"])
            )
            assert (await verify())["valid"] is True

            # A checkpoint at the head holds what it saw: a stretch rewritten with its
            # hashes and links recomputed to fit, and a truncated tail, which no link shows.
            assert (await checkpoint(own.app.state.ctx.db)).valid
            checkpoints = AuditCheckpoint.__table__
            for stmt in (sa.update(checkpoints).values(last_hash="0" * 64), sa.delete(checkpoints)):
                with pytest.raises(DBAPIError, match="append-only"):
                    await execute(stmt)
            prev = rows[1]["hash"]
            for i, original in enumerate(rows[2:]):
                rewritten = AuditLog(
                    **{**original, "details": forged if i == 0 else original["details"]}
                )
                rewritten.prev_hash = prev
                prev = rewritten.hash = _digest(rewritten)
                await execute(
                    sa.update(table)
                    .where(table.c.id == original["id"])
                    .values(details=rewritten.details, prev_hash=rewritten.prev_hash, hash=prev)
                )
            report = await verify()
            assert (report["valid"], report["first_bad_id"]) == (False, rows[-1]["id"])
            assert "checkpoint" in report["problem"] and report["checked"] == 4
            assert not (await checkpoint(own.app.state.ctx.db)).valid  # and nothing recorded
            async with engine.connect() as conn:
                recorded = await conn.scalar(sa.select(sa.func.count(AuditCheckpoint.id)))
            assert recorded == 1
            for original in rows[2:]:
                await execute(
                    sa.update(table)
                    .where(table.c.id == original["id"])
                    .values(**{k: original[k] for k in ("details", "prev_hash", "hash")})
                )
            assert (await verify())["valid"] is True
            await execute(sa.delete(table).where(table.c.id == rows[-1]["id"]))
            report = await verify()
            assert (report["valid"], report["first_bad_id"]) == (False, rows[-1]["id"])
            assert "gone" in report["problem"] and report["checked"] == 4

            # A removed row breaks the link of the row after it.
            await execute(sa.delete(table).where(table.c.id == target["id"]))
            report = await verify()
            assert report["valid"] is False and report["first_bad_id"] == following["id"]
            assert "removed" in report["problem"] and report["checked"] == 2


# -- seed 001's names and dates; team scoping -----------------------------------------------
async def test_seed_001_action_names_find_dotted_actions(admin: httpx.AsyncClient) -> None:
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("act-")})).json()
    r = await admin.get("/api/v1/audit/logs?action=team_create&limit=100")
    assert r.status_code == 200, r.text
    assert str(team["id"]) in [i["resource_id"] for i in r.json()["items"]]
    assert {i["action"] for i in r.json()["items"]} == {"team.create"}


async def test_a_date_only_end_date_includes_that_whole_day(admin: httpx.AsyncClient) -> None:
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("day-")})).json()
    today = datetime.now(UTC).date().isoformat()
    window = f"start_date={today}&end_date={today}"
    for path in (LOGS, "/api/v1/audit/events", f"{SEARCH}?q={team['name']}&"):
        sep = "" if path.endswith("&") else "?"
        r = await admin.get(f"{path}{sep}{window}&action=team.create&limit=1000")
        assert r.status_code == 200, r.text
        assert str(team["id"]) in [i["resource_id"] for i in r.json()["items"]], path
    r = await admin.get(f"{EXPORT}?format=csv&{window}&action=team.create")
    assert str(team["id"]) in [row["resource_id"] for row in csv.DictReader(io.StringIO(r.text))]


async def test_non_admins_read_only_their_teams_entries(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    teams = [
        (await admin.post("/api/v1/users/teams", json={"name": uid("tm-")})).json() for _ in "ab"
    ]
    alice = await make_user("operator", team_ids=[teams[0]["id"]])
    bob = await make_user("operator", team_ids=[teams[1]["id"]])
    secret_host = f"{uid('h')}.internal"
    async with alice.client(api) as c:
        r = await c.post(
            "/api/v1/servers",
            json={
                "name": uid("srv-"),
                "type": "postgresql",
                "host": secret_host,
                "team_id": teams[0]["id"],
            },
        )
        assert r.status_code == 201, r.text
        server = r.json()
        assert (await c.delete(f"/api/v1/servers/{server['id']}")).status_code == 204
    views = [*VIEWS, SEARCH, EXPORT]
    for user, sees in ((alice, True), (bob, False)):
        async with user.client(api) as c:
            for path in views:
                params = {"resource_type": "server", "limit": 1000, "q": secret_host}
                r = await c.get(path, params={**params, "format": "json"})
                assert r.status_code == 200, r.text
                body = r.json()
                items = body if isinstance(body, list) else body["items"]
                mine = [i for i in items if i["resource_id"] == str(server["id"])]
                expected = (1 if path == SEARCH else 2) if sees else 0  # search: the host
                assert len(mine) == expected, (user.username, path, mine)
                assert all(i["team_id"] == teams[0]["id"] for i in mine)
            r = await c.get(f"{EXPORT}?format=csv")
            assert (secret_host in r.text) is sees
        async with api.client() as browser:  # the web page, in a cookie session
            login = {"username": user.username, "password": user.password}
            assert (await browser.post("/api/v1/auth/login", json=login)).status_code == 200
            r = await browser.get("/audit", params={"resource_type": "server"})
            assert r.status_code == 200, r.text
            assert (f"server {server['id']}</td>" in r.text) is sees
    # Admins read every team's; the chain (which now covers team_id) stays valid.
    r = await admin.get(LOGS, params={"resource_id": str(server["id"]), "resource_type": "server"})
    assert {i["action"] for i in r.json()["items"]} == {"server.create", "server.delete"}
    assert (await admin.get(VERIFY)).json()["valid"] is True
