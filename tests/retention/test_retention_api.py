"""Retention policies through the API and applied to real backups: CRUD, validation,
roles, a preview that says why, deletion from storage and catalog (audited, never the
newest), the hook after each scheduled backup, and resuming an interrupted deletion."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from opscenter.backups import service as backups_service
from opscenter.models import Backup, StorageProvider
from opscenter.retention import service as retention
from opscenter.retention.rules import Rules
from opscenter.schedules.scheduler import Scheduler
from opscenter.streaming.manifest import manifest_key
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.schedules.helpers import make_schedule, make_server, uid, wait_job


async def make_policy(client: httpx.AsyncClient, **rules: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/retention-policies", json={"name": uid("keep-"), **rules})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_crud(api: Api, admin: httpx.AsyncClient) -> None:
    p = await make_policy(admin, keep_daily=7, keep_weekly=4, keep_monthly=12, description="std")
    assert (p["keep_daily"], p["keep_weekly"], p["keep_monthly"]) == (7, 4, 12)
    assert p["keep_last_n"] is None and p["min_keep"] == 1 and p["schedule_ids"] == []
    assert (await admin.get(f"/api/v1/retention-policies/{p['id']}")).json() == p
    listed = (await admin.get("/api/v1/retention-policies", params={"limit": 1000})).json()
    assert p["id"] in [i["id"] for i in listed["items"]]
    r = await admin.put(
        f"/api/v1/retention-policies/{p['id']}",
        json={"keep_yearly": 5, "keep_daily": None, "min_keep": 3},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["keep_yearly"], r.json()["keep_daily"], r.json()["min_keep"]) == (5, None, 3)

    server = await make_server(admin)
    s = await make_schedule(admin, server["id"], retention_policy_id=p["id"])
    assert (await admin.get(f"/api/v1/retention-policies/{p['id']}")).json()["schedule_ids"] == [
        s["id"]
    ]
    r = await admin.delete(f"/api/v1/retention-policies/{p['id']}")
    assert_error(r, 409, "CONFLICT")
    assert str(s["id"]) in r.json()["detail"]
    r = await admin.put(f"/api/v1/schedules/{s['id']}", json={"retention_days": 14})
    assert (r.json()["retention_policy_id"], r.json()["retention_days"]) == (None, 14)
    assert (await admin.delete(f"/api/v1/retention-policies/{p['id']}")).status_code == 204
    assert_error(await admin.get(f"/api/v1/retention-policies/{p['id']}"), 404, "NOT_FOUND")
    logs = (
        await admin.get(
            "/api/v1/audit/logs",
            params={"resource_type": "retention_policy", "resource_id": p["id"]},
        )
    ).json()["items"]
    assert [i["action"] for i in logs] == [
        "retention_policy.delete",
        "retention_policy.update",
        "retention_policy.create",
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "at least one rule"),
        ({"min_keep": 3}, "at least one rule"),
        ({"keep_daily": 0}, "greater than or equal to 1"),
        ({"keep_daily": -1}, "greater than or equal to 1"),
        ({"keep_days": 100_000}, "less than or equal"),
        ({"keep_last_n": 3, "keep_hourly": 2}, "Extra inputs"),
        ({"keep_last_n": "many"}, "integer"),
        ({"keep_last_n": 3, "team_id": 2_000_000_000}, "not found"),
    ],
)
async def test_bad_input_is_refused_and_nothing_written(
    api: Api, admin: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    name = uid("bad-")
    r = await admin.post("/api/v1/retention-policies", json={"name": name, **body})
    assert r.status_code in (404, 422), r.text
    assert message in str(r.json()["detail"])
    listed = (await admin.get("/api/v1/retention-policies", params={"limit": 1000})).json()
    assert name not in [i["name"] for i in listed["items"]]


async def test_bad_updates_previews_and_conflicts(api: Api, admin: httpx.AsyncClient) -> None:
    p = await make_policy(admin, keep_last_n=3)
    for body in ({"keep_last_n": None}, {"min_keep": None}, {"name": None}, {"x": 1}):
        r = await admin.put(f"/api/v1/retention-policies/{p['id']}", json=body)
        assert_error(r, 422, "VALIDATION_ERROR")
    assert (await admin.get(f"/api/v1/retention-policies/{p['id']}")).json() == p
    r = await admin.post("/api/v1/retention-policies", json={"name": p["name"], "keep_days": 1})
    assert_error(r, 409, "CONFLICT")
    server = await make_server(admin)
    preview = f"/api/v1/retention-policies/{p['id']}/preview"
    for body, status, code in [
        ({}, 422, "VALIDATION_ERROR"),
        ({"server_id": server["id"]}, 422, "VALIDATION_ERROR"),
        (
            {"schedule_id": 1, "server_id": server["id"], "database_name": "x"},
            422,
            "VALIDATION_ERROR",
        ),
        (
            {"server_id": server["id"], "database_name": "x", "timezone": "Nowhere"},
            422,
            "VALIDATION_ERROR",
        ),
        ({"schedule_id": 2_000_000_000}, 404, "NOT_FOUND"),
        ({"server_id": 2_000_000_000, "database_name": "x"}, 404, "NOT_FOUND"),
    ]:
        assert_error(await admin.post(preview, json=body), status, code)
    body = {"server_id": server["id"], "database_name": "x"}
    r = await admin.post("/api/v1/retention-policies/2000000000/preview", json=body)
    assert_error(r, 404, "NOT_FOUND")


async def test_roles_and_authentication(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    p = await make_policy(admin, keep_last_n=3)
    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        assert (await c.get(f"/api/v1/retention-policies/{p['id']}")).status_code == 200
        for method, path, body in [
            ("POST", "/api/v1/retention-policies", {"name": uid(), "keep_last_n": 1}),
            ("PUT", f"/api/v1/retention-policies/{p['id']}", {"keep_last_n": 1}),
            ("DELETE", f"/api/v1/retention-policies/{p['id']}", None),
        ]:
            assert_error(await c.request(method, path, json=body), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        for method, path in [
            ("GET", "/api/v1/retention-policies"),
            ("POST", "/api/v1/retention-policies"),
            ("POST", f"/api/v1/retention-policies/{p['id']}/preview"),
        ]:
            assert_error(await anonymous.request(method, path, json={}), 401, "UNAUTHORIZED")
    assert (await admin.get(f"/api/v1/retention-policies/{p['id']}")).json() == p
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    outsider = await make_user("operator", team_ids=[team["id"]])
    async with outsider.client(api) as c:
        for method in ("GET", "PUT", "DELETE"):
            r = await c.request(
                method, f"/api/v1/retention-policies/{p['id']}", json={"keep_last_n": 1}
            )
            assert_error(r, 404, "NOT_FOUND")


async def add_backups(
    api: Api, server: dict[str, Any], schedule_id: int | None, rows: list[tuple[datetime, str]]
) -> list[int]:
    """Catalog rows only (no artifacts): enough for a preview, which reads nothing else."""
    ctx = api.app.state.ctx
    async with ctx.db.write_session() as session:
        storage = await backups_service.default_storage(session, server["team_id"])
        backups = [
            Backup(
                team_id=server["team_id"],
                server_id=server["id"],
                storage_id=storage.id,
                schedule_id=schedule_id,
                database_name="sales",
                db_type="postgresql",
                status=status,
                created_at=created,
                storage_key=None,
            )
            for created, status in rows
        ]
        session.add_all(backups)
        await session.commit()
        return [b.id for b in backups]


async def test_preview_lists_what_goes_and_why(api: Api, admin: httpx.AsyncClient) -> None:
    server = await make_server(admin)
    s = await make_schedule(admin, server["id"], database_name="sales", timezone="Asia/Tokyo")
    now = datetime.now(UTC)
    day = timedelta(days=1)
    ids = await add_backups(
        api,
        server,
        s["id"],
        [
            (now - 400 * day, "completed"),
            (now - 60 * day, "completed"),
            (now - 3 * day, "completed"),
            (now - 3 * day + timedelta(minutes=5), "completed"),
            (now - 2 * day, "failed"),
            (now - timedelta(minutes=1), "running"),
        ],
    )
    adhoc = await add_backups(api, server, None, [(now - 30 * day, "completed")])
    p = await make_policy(admin, keep_daily=2, keep_monthly=2)
    r = await admin.post(
        f"/api/v1/retention-policies/{p['id']}/preview", json={"schedule_id": s["id"]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["schedule_id"], body["timezone"]) == (s["id"], "Asia/Tokyo")
    keep = {b["backup_id"]: b["reasons"] for b in body["keep"]}
    delete = {b["backup_id"]: b["reasons"] for b in body["delete"]}
    assert set(delete) == {ids[0], ids[2]} and adhoc[0] not in keep
    assert delete[ids[0]] == ["not kept by any rule"]
    assert "safety floor: newest completed backup" in keep[ids[3]]
    assert any(x.startswith("keep_daily: newest of") for x in keep[ids[3]])
    assert any(x.startswith("keep_monthly") for x in keep[ids[1]])
    assert keep[ids[4]] == ["failed: retention only deletes completed backups"]
    assert keep[ids[5]] == ["in progress (running): never touched"]
    # by target: the ad-hoc backup counts too, and nothing was deleted by the preview
    r = await admin.post(
        f"/api/v1/retention-policies/{p['id']}/preview",
        json={"server_id": server["id"], "database_name": "sales", "timezone": "UTC"},
    )
    body = r.json()
    assert body["timezone"] == "UTC" and body["schedule_id"] is None
    assert {b["backup_id"] for b in body["keep"] + body["delete"]} == {*ids, *adhoc}
    assert (await admin.get(f"/api/v1/backups/{ids[0]}")).status_code == 200


async def stored(api: Api, backup: dict[str, Any]) -> tuple[bool, bool]:
    ctx = api.app.state.ctx
    async with ctx.db.read_session() as session:
        provider = await session.get(StorageProvider, backup["storage_id"])
    assert provider is not None
    storage = ctx.storages.get(provider)
    key = backup["storage_path"]
    return await storage.exists(key), await storage.exists(manifest_key(key))


async def gone(client: httpx.AsyncClient, backup_id: int) -> bool:
    """Wait (bounded) for the retention hook, which runs in the job's finisher."""
    for _ in range(200):
        if (await client.get(f"/api/v1/backups/{backup_id}")).status_code == 404:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_applying_retention_to_real_backups(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    p = await make_policy(admin, keep_last_n=2)
    s = await make_schedule(
        admin, server["id"], database_name=source_db, retention_policy_id=p["id"]
    )
    made = []
    for _ in range(3):
        accepted = (await admin.post(f"/api/v1/schedules/{s['id']}/run")).json()
        assert (await wait_job(api, admin, accepted["job_id"]))["status"] == "succeeded"
        made.append((await admin.get(f"/api/v1/backups/{accepted['id']}")).json())
        assert made[-1]["status"] == "completed"
        assert await stored(api, made[-1]) == (True, True)

    # after the third backup the hook applied keep_last_n=2: the oldest went
    assert await gone(admin, made[0]["id"])
    assert await stored(api, made[0]) == (False, False)
    for backup in made[1:]:
        assert await stored(api, backup) == (True, True)
    logs = (
        await admin.get(
            "/api/v1/audit/logs",
            params={"action": "retention.delete", "resource_id": made[0]["id"]},
        )
    ).json()["items"]
    assert len(logs) == 1 and logs[0]["details"]["policy_id"] == p["id"]
    assert logs[0]["details"]["storage_key"] == made[0]["storage_path"]

    # an interrupted deletion (marked, artifact maybe gone, row still there) is finished
    # by the next pass, even though the rules alone would now keep that backup
    ctx = api.app.state.ctx
    async with ctx.db.write_session() as session:
        await session.execute(
            update(Backup).where(Backup.id == made[1]["id"]).values(status="deleting")
        )
        await session.commit()
    async with ctx.db.read_session() as session:
        storage = ctx.storages.get(await session.get(StorageProvider, made[1]["storage_id"]))
    await storage.delete(made[1]["storage_path"])  # it died after the first storage delete
    async with ctx.events.subscribe() as queue:
        await Scheduler(ctx).retention_pass(schedule_ids=[s["id"]])
        events = [queue.get_nowait() for _ in range(queue.qsize())]
    assert (await admin.get(f"/api/v1/backups/{made[1]['id']}")).status_code == 404
    (deleted,) = [e for e in events if e.type == "retention.deleted"]
    assert deleted.data["backup_ids"] == [made[1]["id"]] and deleted.data["schedule_id"] == s["id"]
    assert deleted.team_id == s["team_id"]
    assert await stored(api, made[1]) == (False, False)

    # a policy that keeps nothing any more still never deletes the newest backup
    scope = retention.Scope(s["team_id"], s["id"], None, None, "UTC")
    far = datetime.now(UTC) + timedelta(days=3650)
    applied = await retention.apply(ctx.db, ctx.storages, Rules(keep_days=1), scope, now=far)
    assert applied.deleted == [] and applied.delete == []
    assert "safety floor: newest completed backup" in applied.keep[0].reasons
    assert await stored(api, made[2]) == (True, True)
    executions = (await admin.get(f"/api/v1/schedules/{s['id']}/executions")).json()
    assert [b["id"] for b in executions["items"]] == [made[2]["id"]]
    # applying twice changes nothing
    again = await retention.apply(ctx.db, ctx.storages, Rules(keep_last_n=1), scope)
    assert again.deleted == [] and again.failed == {}


async def test_a_missing_backup_is_not_the_newest_good_one(
    api: Api, admin: httpx.AsyncClient
) -> None:
    """The safety floor keeps the newest backup no check found corrupt or missing."""
    server = await make_server(admin)
    now = datetime.now(UTC)
    older, newest = await add_backups(
        api,
        server,
        None,
        [(now - timedelta(days=3), "completed"), (now - timedelta(days=1), "completed")],
    )
    async with api.app.state.ctx.db.write_session() as session:
        row = await session.get(Backup, newest)
        assert row is not None
        row.verification_status = "missing"
        await session.commit()
    p = await make_policy(admin, keep_last_n=1)
    r = await admin.post(
        f"/api/v1/retention-policies/{p['id']}/preview",
        json={"server_id": server["id"], "database_name": "sales"},
    )
    keep = {b["backup_id"]: b["reasons"] for b in r.json()["keep"]}
    assert "safety floor: newest backup not found corrupt" in keep[older]
