"""The time series store: rollups keep min, max and mean; retention keeps it bounded;
history reads the right resolution."""

from __future__ import annotations

import statistics

from sqlalchemy import select

from opscenter.core.context import AppContext
from opscenter.models import ResourceSample
from opscenter.resources import store
from opscenter.resources.store import RETENTION, Sample

T0 = 1_800_000_000 // 3600 * 3600  # an hour boundary


async def test_rollups_keep_min_max_and_mean(fresh: AppContext) -> None:
    values = {T0 + i * 15: float((i * 37) % 101) for i in range(2 * 240)}  # two hours
    async with fresh.db.write_session() as session:
        for at, v in values.items():
            await store.write(session, "host", None, at, [Sample("cpu_percent", v)])
        await store.rollup(session, T0 + 2 * 3600 + 1)
        await session.commit()
    async with fresh.db.read_session() as session:
        rows = (
            await session.scalars(
                select(ResourceSample)
                .where(ResourceSample.resolution > 0)
                .order_by(ResourceSample.resolution, ResourceSample.at)
            )
        ).all()
    fives = [r for r in rows if r.resolution == 300]
    hours = [r for r in rows if r.resolution == 3600]
    assert len(fives) == 24 and len(hours) == 2
    for row in fives + hours:
        inside = [v for at, v in values.items() if row.at <= at < row.at + row.resolution]
        assert row.count == len(inside)
        assert row.min == min(inside) and row.max == max(inside)
        assert abs(row.value - statistics.fmean(inside)) < 1e-9
    # Reading at a 1-hour step from the 5-minute rollups gives the same answer.
    async with fresh.db.read_session() as session:
        got = await store.history(session, "host", "cpu_percent", T0, T0 + 7200, 3600)
    first_hour = [v for at, v in values.items() if at < T0 + 3600]
    point = got[""][0]
    assert point.at == T0 and point.min == min(first_hour) and point.max == max(first_hour)
    assert abs(point.value - statistics.fmean(first_hour)) < 1e-9
    # At the rollups' own step each 5-minute row is a point, and the raw samples past the
    # rollup's watermark follow (one newer sample, written after the rollup).
    async with fresh.db.write_session() as session:
        await store.write(session, "host", None, T0 + 7215, [Sample("cpu_percent", 7.5)])
        await session.commit()
    async with fresh.db.read_session() as session:
        fine = (await store.history(session, "host", "cpu_percent", T0, T0 + 7500, 300))[""]
    assert [p.at for p in fine] == [T0 + i * 300 for i in range(25)]
    for p in fine[:24]:
        inside = [v for at, v in values.items() if p.at <= at < p.at + 300]
        assert (p.min, p.max) == (min(inside), max(inside))
        assert abs(p.value - statistics.fmean(inside)) < 1e-9
    assert tuple(fine[24]) == (T0 + 7200, 7.5, 7.5, 7.5)


async def test_tables_stay_bounded_whatever_runs(fresh: AppContext) -> None:
    interval = 12 * 3600  # 92 days of rounds, through the collection's write path
    rounds = 92 * 86400 // interval
    start = T0 + 86400  # after the test above
    async with fresh.db.write_session() as session:
        for i in range(rounds):
            now = start + i * interval
            await store.write(
                session, "server:1", 1, now, [Sample("disk_used_bytes", float(i), "/")]
            )
            await store.maintain(session, now, now - interval if i else None)
            if i % 100 == 0:
                await session.commit()
        await session.commit()
    async with fresh.db.read_session() as session:
        counts = await store.count_by_resolution(session)
        oldest = await session.scalar(
            select(ResourceSample.at).where(ResourceSample.resolution == 3600).order_by("at")
        )
    now = start + (rounds - 1) * interval
    assert counts[0] <= (RETENTION[0] + store.MAINTAIN_EVERY) // interval + 1
    assert counts[300] <= RETENTION[300] // interval + 1
    assert 0 < counts[3600] <= RETENTION[3600] // 3600 + 1
    assert sum(counts.values()) <= store.rows_bound(interval)
    assert oldest is not None and oldest >= now - RETENTION[3600]
