"""Lists page by cursor without missing or repeating a row while rows are added, and say
when their total is only a lower bound (`total_estimated`)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from opscenter.audit import service as audit
from opscenter.audit.schemas import AuditLogOut
from opscenter.core.pagination import COUNT_LIMIT
from opscenter.models import Backup, Notification, StorageProvider
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error

BACKUPS = "/api/v1/backups"
AUDIT = "/api/v1/audit/logs"
NOTIFICATIONS = "/api/v1/notifications"


async def add_backups(api: Api, count: int, database_name: str) -> list[int]:
    """Catalog rows (as an import leaves them), in one statement."""
    return await insert_backups(api, [{"database_name": database_name}] * count)


async def insert_backups(api: Api, rows: list[dict[str, Any]]) -> list[int]:
    """Catalog rows of the given fields, the rest as an import leaves them (the first
    storage's team and storage, completed), in one statement."""
    async with api.app.state.ctx.db.write_session() as session:
        storage = (await session.scalars(select(StorageProvider).limit(1))).one()
        defaults = {
            "team_id": storage.team_id,
            "storage_id": storage.id,
            "db_type": "postgresql",
            "status": "completed",
            "imported": True,
        }
        values = [{**defaults, **row} for row in rows]
        ids = list((await session.scalars(insert(Backup).returning(Backup.id), values)).all())
        await session.commit()
    return ids


async def add_audit_rows(api: Api, count: int, resource_type: str) -> list[int]:
    async with api.app.state.ctx.db.write_session() as session:
        ids = [
            (
                await audit.record(
                    session, action="paging.test", resource_type=resource_type, resource_id=i
                )
            ).id
            for i in range(count)
        ]
        await session.commit()
    return ids


async def walk(
    client: httpx.AsyncClient, path: str, params: dict[str, Any], between: Any
) -> list[int]:
    """Every page by `next_cursor`, calling `between()` after each (rows added meanwhile)."""
    seen: list[int] = []
    cursor = None
    while True:
        r = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= params["limit"] and body["total_estimated"] is False
        seen += [item["id"] for item in body["items"]]
        await between()
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
        assert body["items"], "a page with a next_cursor has rows"


async def test_backups_walked_by_cursor_are_each_seen_once_while_more_arrive(
    api: Api, admin: httpx.AsyncClient
) -> None:
    name = f"paging_{uuid.uuid4().hex[:10]}"
    ids = await add_backups(api, 25, name)  # five full pages: the last says it is the last

    async def more() -> None:
        await add_backups(api, 2, name)

    seen = await walk(admin, BACKUPS, {"database_name": name, "limit": 5}, more)
    assert seen == sorted(ids, reverse=True)
    first = (await admin.get(BACKUPS, params={"database_name": name, "limit": 5})).json()
    assert first["total"] == 25 + 2 * 5 and first["offset"] == 0


async def test_audit_walked_by_cursor_is_each_row_once_while_more_arrive(
    api: Api, admin: httpx.AsyncClient
) -> None:
    kind = f"paging-{uuid.uuid4().hex[:10]}"
    ids = await add_audit_rows(api, 17, kind)

    async def more() -> None:
        await add_audit_rows(api, 3, kind)

    seen = await walk(admin, AUDIT, {"resource_type": kind, "limit": 4}, more)
    assert seen == sorted(ids, reverse=True)
    # The total is the list's, not what is left after the cursor.
    deep = await admin.get(AUDIT, params={"resource_type": kind, "limit": 4, "cursor": ids[3]})
    assert deep.json()["total"] == 17 + 3 * 5
    assert [i["id"] for i in deep.json()["items"]] == ids[2::-1]


async def test_notifications_walked_by_cursor_are_each_seen_once_while_more_arrive(
    api: Api, admin: httpx.AsyncClient
) -> None:
    kind = "paging_" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:10])
    me = (await admin.get("/api/v1/auth/me")).json()["id"]

    async def add(count: int) -> list[int]:
        async with api.app.state.ctx.db.write_session() as session:
            rows = [
                {"user_id": me, "type": kind, "level": "info", "title": "t", "message": "m"}
                for _ in range(count)
            ]
            ids = list(await session.scalars(insert(Notification).returning(Notification.id), rows))
            await session.commit()
        return ids

    ids = await add(13)

    async def more() -> None:
        await add(2)

    seen = await walk(admin, NOTIFICATIONS, {"type": kind, "limit": 4}, more)
    assert seen == sorted(ids, reverse=True)


async def test_a_long_list_states_its_total_is_a_lower_bound(
    api: Api, admin: httpx.AsyncClient
) -> None:
    long_name, short_name = f"long_{uuid.uuid4().hex[:10]}", f"short_{uuid.uuid4().hex[:10]}"
    await add_backups(api, COUNT_LIMIT + 5, long_name)
    await add_backups(api, 3, short_name)

    r = await admin.get(BACKUPS, params={"database_name": long_name, "limit": 10})
    body = r.json()
    assert (body["total"], body["total_estimated"]) == (COUNT_LIMIT, True)
    assert len(body["items"]) == 10 and body["next_cursor"] == body["items"][-1]["id"]

    r = await admin.get(BACKUPS, params={"database_name": short_name})
    assert (r.json()["total"], r.json()["total_estimated"]) == (3, False)
    # Counting goes on past the offset: near the end the total is exact again.
    r = await admin.get(
        BACKUPS, params={"database_name": long_name, "limit": 10, "offset": COUNT_LIMIT}
    )
    body = r.json()
    assert (body["total"], body["total_estimated"], len(body["items"])) == (
        COUNT_LIMIT + 5,
        False,
        5,
    )
    assert body["next_cursor"] is None


async def test_a_bad_cursor_is_a_validation_error(admin: httpx.AsyncClient) -> None:
    for cursor in ("0", "-1", "x", str(2**31)):
        r = await admin.get(BACKUPS, params={"cursor": cursor})
        assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR", r.text


async def test_a_list_is_read_while_another_connection_holds_the_write_lock(
    api: Api, admin: httpx.AsyncClient
) -> None:
    """Reads are SQLite WAL readers (BEGIN DEFERRED), never writers waiting for the lock."""
    if api.backend != "sqlite":
        pytest.skip("PostgreSQL readers never wait for writers")
    await admin.get(BACKUPS)  # the caller is known: no write of authentication follows
    path = api.app.state.ctx.db.url.split("///", 1)[1]
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE backups SET status = status")
        started = time.monotonic()
        r = await admin.get(BACKUPS, params={"limit": 5})
        assert r.status_code == 200, r.text
        assert time.monotonic() - started < 5  # the busy timeout is 30 s
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_backup_list_rows_are_the_models_own_json(api: Api, admin: httpx.AsyncClient) -> None:
    """The list encodes rows itself (core/jsonresponse.py); each item must be exactly what
    `BackupOut` makes of the same backup on its own route: fields, nulls, timestamps."""
    name = f"json_{uuid.uuid4().hex[:10]}"
    ids = await add_backups(api, 2, name)
    async with api.app.state.ctx.db.write_session() as session:
        first = await session.get(Backup, ids[0])
        assert first is not None
        first.compression_type = "zstd"
        first.is_encrypted = True
        first.size_bytes = 12_345
        first.duration_seconds = 1.25
        first.encryption_key_ids = ["age1abc", "age1def"]
        first.row_counts = {"public.users": 3, "public.orders": 0}
        first.started_at = first.created_at.replace(microsecond=120_000)
        first.error_message = 'quote " and ünïcode'
        second = await session.get(Backup, ids[1])
        assert second is not None
        second.compression_type = "none"
        await session.commit()
    r = await admin.get(BACKUPS, params={"database_name": name, "limit": 10})
    assert r.status_code == 200, r.text
    listed = r.json()["items"]
    assert [item["id"] for item in listed] == sorted(ids, reverse=True)
    for item in listed:
        alone = await admin.get(f"{BACKUPS}/{item['id']}")
        assert item == alone.json()
    assert listed[-1]["started_at"].endswith(".120000Z")
    assert [item["is_compressed"] for item in listed] == [False, True]


async def test_audit_list_rows_are_the_models_own_json(api: Api, admin: httpx.AsyncClient) -> None:
    """The trail's pages are encoded from rows (core/jsonresponse.py): each item must be
    what `AuditLogOut` makes of the same row, details, nulls and timestamps included."""
    kind = f"json-{uuid.uuid4().hex[:10]}"
    async with api.app.state.ctx.db.write_session() as session:
        entry = await audit.record(
            session,
            action="paging.json",
            resource_type=kind,
            resource_id=7,
            details={"nested": {"list": [1, 2.5, None], "text": 'quote " ü'}},
        )
        await session.commit()
        expected = AuditLogOut.model_validate(entry).model_dump(mode="json")
    r = await admin.get(AUDIT, params={"resource_type": kind})
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [expected]
    assert r.json()["items"][0]["created_at"].endswith("Z")


async def test_date_filters_read_an_instant_without_offset_as_utc(
    api: Api, admin: httpx.AsyncClient
) -> None:
    """`start_date` and `end_date` of the backup and recovery-point lists: an instant
    without an offset is UTC (it was a 500), a date alone as `end_date` takes in its whole
    day, and a window that ends before it starts is refused."""
    name = f"dates_{uuid.uuid4().hex[:10]}"
    times = [
        "2031-03-04T23:30:00",
        "2031-03-05T00:30:00",
        "2031-03-05T23:59:59",
        "2031-03-06T00:00:01",
    ]
    ids = await insert_backups(
        api,
        [
            {"database_name": name, "created_at": datetime.fromisoformat(t).replace(tzinfo=UTC)}
            for t in times
        ],
    )
    windows = [
        ({"start_date": "2031-03-05T00:00:00"}, ids[1:]),
        ({"start_date": "2031-03-05T01:00:00+01:00"}, ids[1:]),
        ({"start_date": "2031-03-05", "end_date": "2031-03-05"}, ids[1:3]),
        ({"end_date": "2031-03-05T00:30:00"}, ids[:2]),
        ({"end_date": "2031-03-05T00:30:00Z"}, ids[:2]),
    ]
    for path in (BACKUPS, "/api/v1/backup/recovery-points"):
        for window, expected in windows:
            r = await admin.get(path, params={"database_name": name, **window})
            assert r.status_code == 200, (path, window, r.text)
            assert sorted(item["id"] for item in r.json()["items"]) == expected, (path, window)
        for bad in (
            {"start_date": "2031-03-06", "end_date": "2031-03-05"},
            {"start_date": "yesterday"},
        ):
            assert_error(await admin.get(path, params=bad), 422, "VALIDATION_ERROR")
    r = await admin.get(NOTIFICATIONS, params={"since": "2031-03-05T00:00:00"})
    assert r.status_code == 200, r.text


async def test_the_backup_list_keeps_a_member_to_their_teams(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """The list's statement is built once per set of filters (`FilterTemplate`); the
    caller's teams are a bound value of it, so two members of different teams who ask the
    same question each see their own team's rows, and a member of no team sees none."""
    name = f"teams_{uuid.uuid4().hex[:10]}"
    teams = [
        (await admin.post("/api/v1/users/teams", json={"name": f"{name}{i}"})).json()["id"]
        for i in range(2)
    ]
    ids = await insert_backups(
        api, [{"team_id": team, "database_name": name} for team in (*teams, teams[0])]
    )
    expected = {teams[0]: [ids[2], ids[0]], teams[1]: [ids[1]]}
    for team in (*teams, teams[0]):  # the same statement again, for another caller
        member = await make_user("viewer", team_ids=[team])
        async with member.client(api) as c:
            for params in ({}, {"status": "completed"}, {"limit": 1}):
                r = await c.get(BACKUPS, params={"database_name": name, **params})
                assert r.status_code == 200, r.text
                listed = [item["id"] for item in r.json()["items"]]
                assert listed == expected[team][: params.get("limit", 50)], (team, params)
                assert r.json()["total"] == len(expected[team])
    loner = await make_user("viewer")
    async with loner.client(api) as c:
        r = await c.get(BACKUPS, params={"database_name": name})
        assert r.json()["items"] == [] and r.json()["total"] == 0
    r = await admin.get(BACKUPS, params={"database_name": name})
    assert [item["id"] for item in r.json()["items"]] == sorted(ids, reverse=True)
