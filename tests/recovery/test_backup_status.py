"""`/backup/status`: RPO per target against its schedule (red when the newest good backup
is older than the schedule's interval), failures in 24 h, storage, external jobs listed
beside the platform's own targets; and the interval rule itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from opscenter.backups import service as backups_service
from opscenter.models import Backup
from opscenter.recovery.service import judge, schedule_interval, tolerance
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.schedules.helpers import make_schedule, make_server, uid

STATUS = "/api/v1/backup/status"


async def add_backups(
    api: Api,
    server: dict[str, Any],
    database: str,
    rows: list[tuple[timedelta, str, int | None]],
) -> list[int]:
    """Catalog rows (age, status, size): the status view reads nothing else."""
    now = datetime.now(UTC)
    async with api.app.state.ctx.db.write_session() as session:
        storage = await backups_service.default_storage(session, server["team_id"])
        made = [
            Backup(
                team_id=server["team_id"],
                server_id=server["id"],
                storage_id=storage.id,
                database_name=database,
                db_type="postgresql",
                status=status,
                size_bytes=size,
                started_at=now - age,
                completed_at=now - age + timedelta(minutes=3) if status == "completed" else None,
                created_at=now - age,
            )
            for age, status, size in rows
        ]
        session.add_all(made)
        await session.commit()
        return [b.id for b in made]


def by_database(body: dict[str, Any], server_id: int) -> dict[str, dict[str, Any]]:
    return {
        t["database_name"]: t
        for t in body["targets"]
        if t["kind"] == "platform" and t["server_id"] == server_id
    }


async def test_rpo_per_target(api: Api, admin: httpx.AsyncClient) -> None:
    server = await make_server(admin)
    hour, day = timedelta(hours=1), timedelta(days=1)
    daily = {"cron_expression": "0 3 * * *"}
    late = await make_schedule(admin, server["id"], database_name="late", **daily)
    await add_backups(
        api,
        server,
        "late",
        [(2 * day, "completed", 100), (26 * hour, "completed", 50), (2 * hour, "failed", None)],
    )
    fresh = await make_schedule(admin, server["id"], database_name="fresh", **daily)
    fresh_ids = await add_backups(
        api, server, "fresh", [(30 * hour, "completed", 10), (23 * hour, "completed", 20)]
    )
    shaky = await make_schedule(admin, server["id"], database_name="shaky", **daily)
    await add_backups(
        api,
        server,
        "shaky",
        [(hour, "completed", 5), (30 * hour, "failed", None), (hour / 2, "interrupted", None)],
    )
    await make_schedule(admin, server["id"], database_name="new", **daily)
    await add_backups(api, server, "adhoc", [(10 * day, "completed", 7)])
    paused = await make_schedule(admin, server["id"], database_name="paused", **daily)
    assert (
        await admin.put(f"/api/v1/schedules/{paused['id']}", json={"enabled": False})
    ).status_code == 200
    await add_backups(api, server, "paused", [(10 * day, "completed", 1)])

    r = await admin.get(STATUS)
    assert r.status_code == 200, r.text
    body = r.json()
    targets = by_database(body, server["id"])
    assert set(targets) == {"late", "fresh", "shaky", "new", "adhoc", "paused"}

    red = targets["late"]
    assert (red["rpo_status"], red["health"]) == ("breached", "red")
    assert red["rpo_seconds"] == 86400 and red["allowed_age_seconds"] == 86400 + 15 * 60
    assert 26 * 3600 - 60 < red["age_seconds"] < 26 * 3600 + 60
    assert red["schedule_ids"] == [late["id"]] and red["server_name"] == server["name"]
    assert (red["failures_24h"], red["storage_used_bytes"], red["recovery_points"]) == (1, 150, 2)

    green = targets["fresh"]
    assert (green["rpo_status"], green["health"]) == ("ok", "green")
    assert green["last_good_backup_id"] == fresh_ids[1] and green["schedule_ids"] == [fresh["id"]]
    assert (green["failures_24h"], green["storage_used_bytes"]) == (0, 30)

    amber = targets["shaky"]  # within its RPO, but a run failed today
    assert (amber["rpo_status"], amber["health"], amber["failures_24h"]) == ("ok", "amber", 1)
    assert amber["schedule_ids"] == [shaky["id"]]

    assert (targets["new"]["rpo_status"], targets["new"]["health"]) == ("awaiting_first", "gray")
    assert targets["new"]["last_good_backup_at"] is None
    for name in ("adhoc", "paused"):
        assert (targets[name]["rpo_status"], targets[name]["health"]) == ("unscheduled", "gray")
        assert targets[name]["rpo_seconds"] is None

    order = [t["health"] for t in body["targets"]]
    assert order == sorted(order, key=["red", "amber", "green", "gray"].index)
    summary = body["summary"]
    assert summary["targets"] == len(body["targets"])
    assert summary["red"] == sum(t["health"] == "red" for t in body["targets"]) >= 1
    assert summary["storage_used_bytes"] == sum(t["storage_used_bytes"] for t in body["targets"])


async def test_external_jobs_are_listed_beside_the_platform(
    api: Api, admin: httpx.AsyncClient
) -> None:
    key = (
        await admin.post("/api/v1/admin/tokens", json={"name": uid(), "role": "operator"})
    ).json()
    now = datetime.now(UTC)
    ok_name, stale_name = uid("ok-"), uid("stale-")
    async with api.client({"X-API-Key": key["key"]}) as script:
        for body in (
            {"job_name": ok_name, "status": "success", "size_bytes": 4096, "host": "fs1"},
            {"job_name": ok_name, "status": "failed", "host": "fs1"},
            {
                "job_name": stale_name,
                "status": "success",
                "started_at": (now - timedelta(days=3)).isoformat(),
            },
        ):
            assert (await script.post("/api/backup/status", json=body)).status_code == 201
    external = {
        t["name"]: t for t in (await admin.get(STATUS)).json()["targets"] if t["kind"] == "external"
    }
    ok = external[f"{ok_name}@fs1"]
    assert (ok["rpo_status"], ok["health"], ok["failures_24h"]) == ("ok", "amber", 1)
    assert (ok["rpo_seconds"], ok["allowed_age_seconds"]) == (86400, 86400 + 3600)
    assert (ok["storage_used_bytes"], ok["recovery_points"], ok["host"]) == (4096, 1, "fs1")
    stale = external[stale_name]  # reported today, but its last good backup is 3 days old
    assert (stale["rpo_status"], stale["health"]) == ("breached", "red")
    assert 3 * 86400 - 60 < stale["age_seconds"] < 3 * 86400 + 60


async def test_status_is_team_scoped_and_needs_read_backups(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    server = await make_server(admin)
    secret = uid("secret_db_")
    await add_backups(api, server, secret, [(timedelta(hours=1), "completed", 1)])
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    outsider = await make_user("viewer", team_ids=[team["id"]])
    async with outsider.client(api) as c:
        r = await c.get(STATUS)
        assert r.status_code == 200
        assert secret not in {t["database_name"] for t in r.json()["targets"]}
    async with api.client() as anonymous:
        assert_error(await anonymous.get(STATUS), 401, "UNAUTHORIZED")
    # a custom role without read:backups sees no status
    role = uid("role_")
    r = await admin.post(
        "/api/v1/users/roles", json={"name": role, "permissions": ["read:servers"]}
    )
    assert r.status_code == 201, r.text
    limited = await make_user(role)
    async with limited.client(api) as c:
        assert_error(await c.get(STATUS), 403, "FORBIDDEN")


@pytest.mark.parametrize(
    ("expr", "tz", "interval"),
    [
        ("0 3 * * *", "UTC", timedelta(days=1)),
        ("*/15 * * * *", "UTC", timedelta(minutes=15)),
        ("0 3 * * 1-5", "Europe/Berlin", timedelta(days=3)),  # over the weekend
        ("30 2 1 * *", "UTC", timedelta(days=31)),
    ],
)
def test_the_rpo_of_a_schedule_is_its_longest_gap(expr: str, tz: str, interval: timedelta) -> None:
    assert schedule_interval(expr, tz, datetime(2026, 3, 2, 12, tzinfo=UTC)) == interval


def test_judge_with_a_fixed_clock() -> None:
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    day = timedelta(days=1)
    allowed = day + tolerance(day)
    assert tolerance(day) == timedelta(minutes=15) and tolerance(
        timedelta(minutes=10)
    ) == timedelta(minutes=1)
    assert judge(last_good=now - day, allowed=allowed, watched_since=None, now=now) == "ok"
    assert judge(last_good=now - allowed, allowed=allowed, watched_since=None, now=now) == "ok"
    stale = now - allowed - timedelta(seconds=1)
    assert judge(last_good=stale, allowed=allowed, watched_since=None, now=now) == "breached"
    assert (
        judge(last_good=None, allowed=allowed, watched_since=now - day, now=now) == "awaiting_first"
    )
    assert (
        judge(last_good=None, allowed=allowed, watched_since=now - 2 * day, now=now) == "breached"
    )
    assert judge(last_good=stale, allowed=None, watched_since=None, now=now) == "unscheduled"


async def test_copies_are_one_recovery_point_but_all_use_storage(
    api: Api, admin: httpx.AsyncClient
) -> None:
    server = await make_server(admin)
    (original,) = await add_backups(api, server, "copied", [(timedelta(hours=1), "completed", 100)])
    (copy,) = await add_backups(api, server, "copied", [(timedelta(hours=1), "completed", 100)])
    async with api.app.state.ctx.db.write_session() as session:
        row = await session.get(Backup, copy)
        assert row is not None
        row.copy_of_id = original
        await session.commit()
    target = by_database((await admin.get(STATUS)).json(), server["id"])["copied"]
    assert (target["recovery_points"], target["storage_used_bytes"]) == (1, 200)
