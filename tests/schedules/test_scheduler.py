"""The scheduler, with an injected clock and no waiting: DST days, misfires, overlap,
and two scheduler processes racing for the same slot on one database."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event, func, select, update

from opscenter.audit import service as audit
from opscenter.core.clock import utcnow
from opscenter.core.db import Database
from opscenter.models import Backup, Schedule, ScheduleRun
from opscenter.schedules.scheduler import Scheduler
from opscenter.schedules.service import Fired
from tests.conftest import Api
from tests.core.helpers import admin_client, own_app
from tests.schedules.helpers import (
    disable,
    end_job,
    make_schedule,
    make_server,
    set_next_run,
    uid,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class Collector:
    """Jobs the scheduler submits, kept from the runner (these backups need not run)."""

    def __init__(self) -> None:
        self.jobs: list[int] = []

    def __call__(self, job_id: int) -> None:
        self.jobs.append(job_id)


async def walk(
    api: Api, scheduler: Scheduler, schedule_id: int, start: datetime, end: datetime
) -> list[Fired]:
    """Tick every 15 minutes from start to end; end each started job before the next tick."""
    fired: list[Fired] = []
    now = start
    while now <= end:
        for result in await scheduler.tick(now, schedule_ids=[schedule_id]):
            fired.append(result)
            if result.job_id is not None:
                await end_job(api, result.job_id)
        now += timedelta(minutes=15)
    return fired


async def test_daily_schedule_across_dst_runs_once_per_local_date(
    api: Api, admin: httpx.AsyncClient
) -> None:
    server = await make_server(admin)
    schedule = await make_schedule(
        admin, server["id"], cron_expression="30 2 * * *", timezone="Europe/Berlin"
    )
    # interval 900 s: a tick every 15 minutes is on time (grace = 2 intervals)
    scheduler = Scheduler(api.app.state.ctx, interval_seconds=900, submit=Collector())
    try:
        # Europe/Berlin 2021: 02:00 -> 03:00 on March 28, 03:00 -> 02:00 on October 31.
        await set_next_run(api, schedule["id"], utc(2021, 3, 26))
        spring = await walk(api, scheduler, schedule["id"], utc(2021, 3, 26), utc(2021, 3, 30))
        await set_next_run(api, schedule["id"], utc(2021, 10, 29))
        autumn = await walk(api, scheduler, schedule["id"], utc(2021, 10, 29), utc(2021, 11, 2))
    finally:
        await disable(api, schedule["id"])
    assert [f.scheduled_for for f in spring] == [
        utc(2021, 3, 26, 1, 30),
        utc(2021, 3, 27, 1, 30),
        utc(2021, 3, 28, 1, 0),  # 02:30 does not exist that night: 03:00 CEST, once
        utc(2021, 3, 29, 0, 30),
    ]
    assert [f.scheduled_for for f in autumn] == [
        utc(2021, 10, 29, 0, 30),
        utc(2021, 10, 30, 0, 30),
        utc(2021, 10, 31, 0, 30),  # 02:30 happens twice that night: once, the first
        utc(2021, 11, 1, 1, 30),
    ]
    assert {(f.trigger, f.status) for f in spring + autumn} == {("scheduled", "started")}
    runs = (await admin.get(f"/api/v1/schedules/{schedule['id']}/runs")).json()
    assert runs["total"] == 8
    executions = (await admin.get(f"/api/v1/schedules/{schedule['id']}/executions")).json()
    assert executions["total"] == 8
    assert {b["status"] for b in executions["items"]} == {"cancelled"}


async def test_two_schedulers_racing_run_each_slot_exactly_once(
    api: Api, admin: httpx.AsyncClient
) -> None:
    """Two processes (here: two engines, two sessions) tick at the same moment, over and
    over; every slot runs once. On PostgreSQL both really run in parallel."""
    server = await make_server(admin)
    schedule = await make_schedule(admin, server["id"], cron_expression="*/5 * * * *")
    ctx = api.app.state.ctx
    first = await set_next_run(api, schedule["id"], utc(2022, 6, 1))
    engines = [Database(api.settings.effective_database_url) for _ in range(2)]
    submitted = Collector()
    schedulers = [Scheduler(ctx, db=db, submit=submitted) for db in engines]
    fired: list[Fired] = []
    try:
        for n in range(6):
            now = first + timedelta(minutes=5 * n, seconds=1)
            rounds = await asyncio.gather(
                *(s.tick(now, schedule_ids=[schedule["id"]]) for s in schedulers)
            )
            assert sum(len(r) for r in rounds) == 1, rounds
            fired += [f for r in rounds for f in r]
            for job_id in submitted.jobs[len(fired) - 1 :]:
                await end_job(api, job_id)
        # A slot already claimed is never run again, even if next_run is rewound to it.
        await set_next_run(api, schedule["id"], first - timedelta(seconds=1))
        assert await schedulers[0].tick(first + timedelta(seconds=2)) == []
        async with ctx.db.read_session() as session:
            slots = (
                await session.scalars(
                    select(ScheduleRun.scheduled_for)
                    .where(ScheduleRun.schedule_id == schedule["id"])
                    .order_by(ScheduleRun.scheduled_for)
                )
            ).all()
            backups = await session.scalar(
                select(func.count()).where(Backup.schedule_id == schedule["id"])
            )
        after_rewind = (await admin.get(f"/api/v1/schedules/{schedule['id']}")).json()
    finally:
        await disable(api, schedule["id"])
        for db in engines:
            await db.dispose()
    assert list(slots) == [first + timedelta(minutes=5 * n) for n in range(6)]
    assert backups == 6 and len(submitted.jobs) == 6
    assert [f.scheduled_for for f in fired] == list(slots)
    # ...and the schedule moved past the claimed slot instead of retrying it forever.
    assert first == utc(2022, 6, 1, 0, 5)
    assert after_rewind["next_run"] == "2022-06-01T00:10:00Z"


async def test_a_slot_is_skipped_while_the_previous_run_is_still_going(
    api: Api, admin: httpx.AsyncClient
) -> None:
    server = await make_server(admin)
    schedule = await make_schedule(admin, server["id"], cron_expression="*/10 * * * *")
    scheduler = Scheduler(api.app.state.ctx, submit=Collector())
    try:
        slot = await set_next_run(api, schedule["id"], utc(2022, 7, 1))
        [started] = await scheduler.tick(slot, schedule_ids=[schedule["id"]])
        assert started.status == "started" and started.job_id is not None
        # its job is still queued: the next slot is recorded as skipped, nothing starts
        [skipped] = await scheduler.tick(
            slot + timedelta(minutes=10), schedule_ids=[schedule["id"]]
        )
        assert skipped.status == "skipped" and skipped.backup_id is None
        assert f"job {started.job_id}" in (skipped.reason or "")
        # a manual run is refused too
        r = await admin.post(f"/api/v1/schedules/{schedule['id']}/run", json={})
        assert r.status_code == 409 and r.json()["code"] == "CONFLICT"
        assert "in progress" in r.json()["detail"]
        await end_job(api, started.job_id)
        [again] = await scheduler.tick(slot + timedelta(minutes=20), schedule_ids=[schedule["id"]])
        assert again.status == "started" and again.job_id is not None
        await end_job(api, again.job_id)
    finally:
        await disable(api, schedule["id"])
    runs = (await admin.get(f"/api/v1/schedules/{schedule['id']}/runs")).json()["items"]
    assert [(r["status"], r["trigger"]) for r in runs] == [  # the started ones were cancelled
        ("cancelled", "scheduled"),
        ("skipped", "scheduled"),
        ("cancelled", "scheduled"),
    ]
    assert runs[1]["reason"] and runs[1]["backup_id"] is None


async def test_missed_runs_coalesce_into_one_catch_up_run(
    api: Api, admin: httpx.AsyncClient
) -> None:
    server = await make_server(admin)
    hourly = await make_schedule(admin, server["id"], cron_expression="0 * * * *")
    skipper = await make_schedule(
        admin, server["id"], cron_expression="0 * * * *", misfire_policy="skip"
    )
    scheduler = Scheduler(api.app.state.ctx, submit=Collector())
    ids = [hourly["id"], skipper["id"]]
    try:
        for schedule_id in ids:
            await set_next_run(api, schedule_id, utc(2022, 8, 1))
        # down from before 01:00 until 06:10: slots 01:00 .. 06:00 were missed
        async with api.app.state.ctx.events.subscribe() as queue:
            fired = {
                f.schedule_id: f
                for f in await scheduler.tick(utc(2022, 8, 1, 6, 10), schedule_ids=ids)
            }
            events = [queue.get_nowait() for _ in range(queue.qsize())]
        # the next round finds nothing due: the schedules resumed at 07:00
        assert await scheduler.tick(utc(2022, 8, 1, 6, 20), schedule_ids=ids) == []
        states = [(await admin.get(f"/api/v1/schedules/{i}")).json() for i in ids]
        job_id = fired[hourly["id"]].job_id
        assert job_id is not None
        await end_job(api, job_id)
    finally:
        for schedule_id in ids:
            await disable(api, schedule_id)
    catch_up, skipped = fired[hourly["id"]], fired[skipper["id"]]
    assert catch_up.scheduled_for == utc(2022, 8, 1, 1)
    assert (catch_up.trigger, catch_up.status) == ("catch_up", "started")
    assert (skipped.trigger, skipped.status, skipped.backup_id) == ("catch_up", "skipped", None)
    assert "misfire_policy" in (skipped.reason or "")
    for state in states:
        assert state["next_run"] == "2022-08-01T07:00:00Z"
    assert states[0]["last_run"] == "2022-08-01T06:10:00Z" and states[1]["last_run"] is None
    runs = (await admin.get(f"/api/v1/schedules/{hourly['id']}/runs")).json()["items"]
    assert runs[0]["missed"] == 5  # 02:00 .. 06:00 coalesced into the 01:00 run
    # both misses are announced, each with what became of the slot
    missed = {e.data["schedule_id"]: e.data for e in events if e.type == "schedule.missed"}
    assert missed[hourly["id"]]["status"] == "started"
    assert "catch-up" in missed[hourly["id"]]["message"]
    assert missed[skipper["id"]]["status"] == "skipped"
    assert missed[skipper["id"]]["scheduled_for"].startswith("2022-08-01T01:00")


async def test_runs_use_the_first_storage_and_a_failed_start_is_recorded(
    api: Api, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    r = await admin.post(
        "/api/v1/storage/providers",
        json={"name": uid("dir-"), "type": "local", "config": {"path": str(tmp_path)}},
    )
    assert r.status_code == 201, r.text
    provider = r.json()
    server = await make_server(admin)
    schedule = await make_schedule(
        admin, server["id"], cron_expression="0 * * * *", storage_ids=[provider["id"]]
    )
    scheduler = Scheduler(api.app.state.ctx, submit=Collector())
    ids = [schedule["id"]]
    try:
        slot = await set_next_run(api, schedule["id"], utc(2022, 9, 1))
        [ok] = await scheduler.tick(slot, schedule_ids=ids)
        assert ok.job_id is not None and ok.backup_id is not None
        backup = (await admin.get(f"/api/v1/backups/{ok.backup_id}")).json()
        assert backup["storage_id"] == provider["id"] and backup["schedule_id"] == schedule["id"]
        await end_job(api, ok.job_id)
        r = await admin.put(
            f"/api/v1/storage/providers/{provider['id']}", json={"is_active": False}
        )
        assert r.status_code == 200, r.text
        [failed] = await scheduler.tick(slot + timedelta(hours=1), schedule_ids=ids)
        state = (await admin.get(f"/api/v1/schedules/{schedule['id']}")).json()
    finally:
        await disable(api, schedule["id"])
    assert (failed.status, failed.backup_id, failed.job_id) == ("failed", None, None)
    assert "disabled" in (failed.reason or "")
    assert state["next_run"] == "2022-09-01T03:00:00Z"  # it moved on all the same
    executions = (await admin.get(f"/api/v1/schedules/{schedule['id']}/executions")).json()
    assert executions["total"] == 1  # the failed start left no backup behind
    logs = (
        await admin.get(
            "/api/v1/audit/logs",
            params={"action": "schedule.run", "resource_id": schedule["id"]},
        )
    ).json()["items"]
    assert [(i["outcome"], i["details"]["status"]) for i in logs] == [
        ("failure", "failed"),
        ("success", "started"),
    ]


async def test_the_loop_fires_a_slot_at_its_time_not_an_interval_later(tmp_path: Path) -> None:
    async with own_app("sqlite", tmp_path) as api:
        async with await admin_client(api) as admin:
            server = await make_server(admin)
            schedule = await make_schedule(admin, server["id"])
        ctx = api.app.state.ctx
        slot = utcnow() + timedelta(seconds=1)
        async with ctx.db.write_session() as session:
            await session.execute(
                update(Schedule).where(Schedule.id == schedule["id"]).values(next_run=slot)
            )
            await session.commit()
        collector = Collector()
        # The loop's first round comes before the slot; the next is ten minutes away.
        scheduler = Scheduler(ctx, interval_seconds=600, submit=collector)
        await scheduler.start()
        try:
            for _ in range(100):
                if collector.jobs:
                    break
                await asyncio.sleep(0.1)
        finally:
            await scheduler.stop()
        async with ctx.db.read_session() as session:
            runs = (await session.scalars(select(ScheduleRun))).all()
        assert [(r.schedule_id, r.scheduled_for, r.trigger) for r in runs] == [
            (schedule["id"], slot, "scheduled")
        ]
        assert collector.jobs == [runs[0].job_id]


async def test_a_slot_held_by_another_process_does_not_hold_up_the_others(
    api: Api, admin: httpx.AsyncClient
) -> None:
    """On PostgreSQL a round passes over a slot whose schedule row is locked (another
    process is deciding its run): the others fire without waiting, then it, alone."""
    if api.backend == "sqlite":
        pytest.skip("SQLite has one writer: a round fires its slots one at a time")
    server = await make_server(admin)
    held = await make_schedule(admin, server["id"], priority=10)  # first in the round
    free = await make_schedule(admin, server["id"], priority=1)
    slot = await set_next_run(api, held["id"], utc(2022, 6, 1))
    assert await set_next_run(api, free["id"], utc(2022, 6, 1)) == slot
    ctx = api.app.state.ctx
    other_process = Database(api.settings.effective_database_url)
    scheduler = Scheduler(ctx, submit=Collector())
    try:
        async with other_process.write_session() as locker:
            await locker.execute(
                select(Schedule.id).where(Schedule.id == held["id"]).with_for_update()
            )
            tick = asyncio.create_task(
                scheduler.tick(slot + timedelta(seconds=1), schedule_ids=[held["id"], free["id"]])
            )
            for _ in range(100):
                async with ctx.db.read_session() as session:
                    free_runs = (
                        await session.scalars(
                            select(ScheduleRun.scheduled_for).where(
                                ScheduleRun.schedule_id == free["id"]
                            )
                        )
                    ).all()
                if free_runs:
                    break
                await asyncio.sleep(0.1)
            assert not tick.done()  # the held one still waits for the lock
        fired = await tick
    finally:
        await disable(api, held["id"])
        await disable(api, free["id"])
        await other_process.dispose()
    assert free_runs == [slot]
    assert {(f.schedule_id, f.scheduled_for) for f in fired} == {
        (held["id"], slot),
        (free["id"], slot),
    }


async def test_a_round_fires_its_slots_together_and_a_claimed_one_alone(
    api: Api, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A round writes its slots' runs, backups (with their copies), jobs and audit entries
    in one transaction, chained in order, and hands the jobs over in priority order. When
    that transaction fails (here: one slot was already claimed), the round fires the others
    one by one and moves the claimed one on."""
    storages = []
    for name in ("first", "second", "disabled"):
        r = await admin.post(
            "/api/v1/storage/providers",
            json={"name": uid(name), "type": "local", "config": {"path": str(tmp_path / name)}},
        )
        assert r.status_code == 201, r.text
        storages.append(r.json()["id"])
    server = await make_server(admin)
    hourly = {"cron_expression": "0 * * * *"}
    copied = await make_schedule(
        admin, server["id"], priority=3, storage_ids=storages[:2], **hourly
    )
    plain = await make_schedule(admin, server["id"], priority=2, **hourly)
    broken = await make_schedule(
        admin, server["id"], priority=1, storage_ids=[storages[2]], **hourly
    )
    ids = [broken["id"], plain["id"], copied["id"]]
    ctx = api.app.state.ctx
    collector = Collector()
    scheduler = Scheduler(ctx, submit=collector)
    statements: list[str] = []

    commits: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    def commit(*args: object) -> None:
        commits.append("commit")

    try:
        for schedule_id in ids:
            slot = await set_next_run(api, schedule_id, utc(2022, 10, 1))
        r = await admin.put(  # the broken schedule's storage: it cannot start
            f"/api/v1/storage/providers/{storages[2]}", json={"is_active": False}
        )
        assert r.status_code == 200, r.text
        engine = ctx.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        event.listen(engine, "commit", commit)
        try:
            first = await scheduler.tick(slot, schedule_ids=ids)
        finally:
            event.remove(engine, "before_cursor_execute", count)
            event.remove(engine, "commit", commit)
        for job_id in collector.jobs:
            await end_job(api, job_id)
        # the copied schedule's slot is rewound to the one it already ran
        await set_next_run(api, copied["id"], slot - timedelta(seconds=1))
        later = await set_next_run(api, plain["id"], slot)
        second = await scheduler.tick(later, schedule_ids=ids)
        for job_id in collector.jobs[2:]:
            await end_job(api, job_id)
        states = {i: (await admin.get(f"/api/v1/schedules/{i}")).json() for i in ids}
        async with ctx.db.read_session() as session:
            chain = await audit.verify_chain(session)
            copies = (
                await session.scalars(select(Backup).where(Backup.copy_of_id == first[0].backup_id))
            ).all()
    finally:
        for schedule_id in ids:
            await disable(api, schedule_id)
    assert [(f.schedule_id, f.status) for f in first] == [
        (copied["id"], "started"),
        (plain["id"], "started"),
        (broken["id"], "failed"),
    ]
    assert collector.jobs[:2] == [first[0].job_id, first[1].job_id]
    assert [(c.storage_id, c.job_id) for c in copies] == [(storages[1], first[0].job_id)]
    # one transaction; on PostgreSQL each kind of row is one INSERT for the whole round
    # (SQLite's RETURNING keeps no order, so SQLAlchemy inserts its rows one at a time)
    assert commits == ["commit"]
    inserts = Counter(s.split("(")[0].strip() for s in statements if s.startswith("INSERT"))
    rows = {"audit_logs": 3, "backups": 3, "jobs": 2, "schedule_runs": 3}
    if api.backend == "postgres":
        rows = {**{table: 1 for table in rows}, "backups": 2}  # the primaries, the copy
    assert inserts == {f"INSERT INTO {table}": n for table, n in rows.items()}
    assert [(f.schedule_id, f.status) for f in second] == [
        (plain["id"], "started"),
        (broken["id"], "failed"),
    ]
    assert states[copied["id"]]["next_run"] == "2022-10-01T03:00:00Z"  # moved past the round
    assert states[plain["id"]]["next_run"] == "2022-10-01T03:00:00Z"
    assert chain.valid, chain
