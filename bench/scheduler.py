"""The scheduler at 10,000 enabled schedules, on PostgreSQL and on SQLite.

Goals (issue #23): one tick under 100 ms; fire lag (the moment a due slot's job is handed
to the runner minus the slot's time) p99 under 1 s. Measures, per backend:

- a tick with nothing due, and a tick with `--due` schedules due (each fires a real run:
  its claim, backup and job rows, audit record);
- the real scheduler loop for `--window` seconds while `--firing` of the schedules come
  due, spread evenly over that window; fire lag of each.

The runner is replaced by a recorder of when each job was submitted: the point is the
scheduler, not the backups. Prints each figure against its goal, with the ratio.

    .venv/bin/python bench/scheduler.py [--schedules 10000] [--firing 600] [--window 60]

`--firing 600 --window 60` is 10 runs a second; the lag holds while that rate times one
run's cost (its rows and audit record: ~11 ms on PostgreSQL here) stays under a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from common import admin_client, load_line, postgres_url, running_app, scratch_database
from fastapi import FastAPI
from sqlalchemy import insert, select, update

from opscenter.config import Settings
from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.models import Schedule, ScheduleRun
from opscenter.schedules.scheduler import Scheduler

TICK_GOAL = 0.100
LAG_GOAL = 1.0
FAR = timedelta(days=1)  # where the schedules that do not take part wait


@asynccontextmanager
async def started_app(backend: str, root: Path) -> AsyncIterator[FastAPI]:
    """A started app (its own scheduler off) on a fresh database of `backend`."""
    with contextlib.ExitStack() as stack:
        if backend == "postgres":
            url = postgres_url(stack.enter_context(scratch_database()))
        else:
            url = f"sqlite+aiosqlite:///{root / 'opscenter.db'}"
        async with running_app(url, OPSCENTER_RESOURCES_INTERVAL=0) as app:
            yield app


async def add_schedules(
    ctx: AppContext, client: httpx.AsyncClient, source: Path, count: int
) -> None:
    """A local files server (through the API, as a user makes one) and `count` enabled daily
    schedules backing up a directory of it, all far from due (inserted in bulk: the API
    would take minutes, and it is not what is measured)."""
    r = await client.post(
        "/api/v1/servers", json={"name": "bench-files", "type": "local", "paths": [str(source)]}
    )
    assert r.status_code == 201, r.text
    server = r.json()
    later = utcnow() + FAR
    rows = [
        {
            "team_id": server["team_id"],
            "name": f"bench-{i}",
            "server_id": server["id"],
            "source_path": str(source),
            "cron_expression": "0 3 * * *",
            "next_run": later,
        }
        for i in range(count)
    ]
    async with ctx.db.write_session() as session:
        for start in range(0, count, 1000):
            await session.execute(insert(Schedule), rows[start : start + 1000])
        await session.commit()


async def make_due(ctx: AppContext, slots: dict[int, datetime]) -> None:
    async with ctx.db.write_session() as session:
        for schedule_id, slot in slots.items():
            await session.execute(
                update(Schedule).where(Schedule.id == schedule_id).values(next_run=slot)
            )
        await session.commit()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(label: str, values: list[float], goal: float, unit: float, suffix: str) -> None:
    p50, p99 = statistics.median(values), pct(values, 0.99)
    verdict = "OK" if p99 <= goal else "OVER THE GOAL"
    print(
        f"  {label:<34} p50 {p50 * unit:8.1f} {suffix}  p99 {p99 * unit:8.1f} {suffix}  "
        f"goal {goal * unit:.0f} {suffix}  ratio p99/goal {p99 / goal:5.2f}  {verdict}"
    )


async def ticks(scheduler: Scheduler, ctx: AppContext, ids: list[int], due: int) -> list[float]:
    """Durations of ticks with `due` schedules due (fresh ones each round)."""
    durations = []
    for round_ in range(20):
        chosen = ids[round_ * due : (round_ + 1) * due]
        await make_due(ctx, {i: utcnow() - timedelta(seconds=1) for i in chosen})
        started = time.perf_counter()
        fired = await scheduler.tick()
        durations.append(time.perf_counter() - started)
        assert len(fired) == len(chosen), (len(fired), len(chosen))
    return durations


async def fire_lags(ctx: AppContext, ids: list[int], window: float, interval: float) -> list[float]:
    """The scheduler's own loop while `ids` come due evenly over `window` seconds."""
    submitted: dict[int, datetime] = {}
    all_fired = asyncio.Event()

    def record(job_id: int) -> None:
        submitted.setdefault(job_id, utcnow())
        if len(submitted) == len(ids):
            all_fired.set()

    scheduler = Scheduler(ctx, interval_seconds=interval, submit=record)
    begin = utcnow() + timedelta(seconds=2)
    step = window / len(ids)
    await make_due(ctx, {s: begin + timedelta(seconds=i * step) for i, s in enumerate(ids)})
    await scheduler.start()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_fired.wait(), 2 + window + interval + 30)
    finally:
        await scheduler.stop()
    async with ctx.db.read_session() as session:
        rows = await session.execute(
            select(ScheduleRun.job_id, ScheduleRun.scheduled_for).where(
                ScheduleRun.job_id.in_(list(submitted))
            )
        )
        slots = {job: slot for job, slot in rows.all()}
    fired = [(submitted[job] - slot).total_seconds() for job, slot in slots.items() if slot]
    # A slot that never fired is late by at least the whole wait: counted as such.
    return fired + [(utcnow() - begin).total_seconds() - window] * (len(ids) - len(fired))


async def bench(backend: str, count: int, due: int, firing: int, window: float) -> None:
    interval = float(Settings.model_fields["scheduler_interval_seconds"].default)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "source"
        source.mkdir()
        (source / "a.txt").write_text("alpha")
        async with started_app(backend, root) as app:
            ctx: AppContext = app.state.ctx
            async with admin_client(app) as client:
                await add_schedules(ctx, client, source, count)
            async with ctx.db.read_session() as session:
                ids = list(await session.scalars(select(Schedule.id).order_by(Schedule.id)))
            recorder = Scheduler(ctx, interval_seconds=interval, submit=lambda job_id: None)
            idle = await ticks(recorder, ctx, ids, 0)
            busy = await ticks(recorder, ctx, ids, due)
            lags = await fire_lags(ctx, ids[20 * due : 20 * due + firing], window, interval)
    print(
        f"{backend}: {count} enabled schedules; scheduler interval {interval:g} s; "
        f"{firing} slots due over {window:g} s; {load_line()}"
    )
    report("tick, nothing due", idle, TICK_GOAL, 1000, "ms")
    report(f"tick, {due} due", busy, TICK_GOAL, 1000, "ms")
    report(f"fire lag ({len(lags)} slots)", lags, LAG_GOAL, 1, "s ")


async def main(args: argparse.Namespace) -> None:
    for backend in args.backends:
        await bench(backend, args.schedules, args.due, args.firing, args.window)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=10, help="schedules due in a busy tick")
    parser.add_argument("--firing", type=int, default=600, help="slots due in the window")
    parser.add_argument("--window", type=float, default=60.0, help="seconds")
    parser.add_argument("--backends", nargs="+", default=["postgres", "sqlite"])
    asyncio.run(main(parser.parse_args()))
