"""Resource monitoring at scale: 100 sources x 20 metrics collected every 15 s, 30 days
simulated, written through the collection's own write path (`store.write_round`, then
`store.maintain`: rollups and pruning, one transaction per round). Prints three figures,
each with its limit and ratio (measured / limit, below 1 is within):

1. rows in the store after 30 days against the stated bound (`store.rows_bound(15)`
   per series);
2. p99 of a 7-day history query at a 5-minute step (the API's service call), limit 50 ms;
3. CPU time of one collection round of this host (psutil + the write), limit 50 ms.

What a 15 s collection leaves behind is one row per bucket in the 1 h and 5 min tiers and
every raw sample of the last 6 h; older raw samples are pruned once rolled up. So the
simulation writes one round per hour up to the 5-minute tier's reach (8 days back), one
per 5 minutes from there up to the raw tier's reach, and every 15 s for the last 6 h
(`--full` writes every 15 s throughout, ~350 M rows: hours). The tables it ends with are
row for row those of 30 days at 15 s.

    .venv/bin/python bench/resources.py [--sources 100] [--metrics 20] [--days 30]
        [--database-url postgresql+asyncpg://...] [--full]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from opscenter.app import create_app
from opscenter.config import Settings
from opscenter.core.principal import SYSTEM
from opscenter.resources import service, store
from opscenter.resources.store import RETENTION, Sample

INTERVAL = 15
QUERY_LIMIT_MS = 50.0
ROUND_CPU_LIMIT_MS = 50.0


def instants(days: int, full: bool, end: int) -> list[int]:
    start = end - days * 86400
    if full:
        return list(range(start, end + 1, INTERVAL))
    five_min_from = end - RETENTION[300]
    raw_from = end - RETENTION[0]
    out = list(range(start, five_min_from, 3600))
    out += range(five_min_from // 300 * 300, raw_from, 300)
    out += range(raw_from, end + 1, INTERVAL)
    return out


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        values: dict[str, Any] = {
            "OPSCENTER_DATA_DIR": Path(tmp),
            "OPSCENTER_ADMIN_PASSWORD": "bench-password-1",
            "OPSCENTER_LOG_LEVEL": "WARNING",
            "OPSCENTER_HEALTH_INTERVAL": 0,
            "OPSCENTER_SCHEDULER_INTERVAL": 0,
            "OPSCENTER_RESOURCES_INTERVAL": 0,
        }
        if args.database_url:
            values["DATABASE_URL"] = args.database_url
        app = create_app(Settings(_env_file=None, **values))  # type: ignore[call-arg]
        async with app.router.lifespan_context(app):
            await run(app.state.ctx, args)


async def run(ctx: Any, args: argparse.Namespace) -> None:
    end = int(time.time()) // 300 * 300
    rounds = instants(args.days, args.full, end)
    series = args.sources * args.metrics
    rng = random.Random(16)
    level = {(s, m): rng.uniform(10, 60) for s in range(args.sources) for m in range(args.metrics)}
    started = time.perf_counter()
    previous: int | None = None
    for n, at in enumerate(rounds):
        async with ctx.db.write_session() as session:
            await store.write_round(
                session,
                at,
                [
                    (
                        f"server:{s + 1}",
                        1,
                        [
                            Sample(f"metric_{m}", level[s, m] + rng.uniform(-5, 5), "")
                            for m in range(args.metrics)
                        ],
                    )
                    for s in range(args.sources)
                ],
            )
            await store.maintain(session, at, previous)
            await session.commit()
        previous = at
        if n % 500 == 0:
            print(f"  round {n}/{len(rounds)}, {time.perf_counter() - started:.0f} s", flush=True)
    written = len(rounds) * series
    took = time.perf_counter() - started
    print(f"wrote {written:,} samples in {len(rounds):,} rounds: {took:.0f} s")

    async with ctx.db.read_session() as session:
        counts = await store.count_by_resolution(session)
    total = sum(counts.values())
    bound = store.rows_bound(INTERVAL) * series
    print(f"rows by resolution: {dict(sorted(counts.items()))}")
    print(
        f"1. store rows after {args.days} days: {total:,}, bound {bound:,} "
        f"({store.rows_bound(INTERVAL)} per series x {series}), ratio {total / bound:.3f}"
    )

    timings = []
    for i in range(args.queries):
        server_id = rng.randrange(args.sources) + 1
        async with ctx.db.read_session() as session:
            t = time.perf_counter()
            got = await store.history(
                session,
                f"server:{server_id}",
                f"metric_{rng.randrange(args.metrics)}",
                end - 7 * 86400,
                end,
                300,
            )
            timings.append((time.perf_counter() - t) * 1000)
        if i == 0:
            points = sum(len(p) for p in got.values())
            print(f"   (a 7-day answer at 5 min has {points} points)")
    p99 = statistics.quantiles(timings, n=100)[98]
    print(f"   (median {statistics.median(timings):.1f} ms, first {timings[0]:.1f} ms)")
    print(
        f"2. 7-day history at a 5-min step, p99 of {args.queries}: {p99:.1f} ms, "
        f"limit {QUERY_LIMIT_MS:.0f} ms, ratio {p99 / QUERY_LIMIT_MS:.3f}"
    )

    cpu = []
    await service.collect_round(ctx, only={"host"})  # primes the CPU and network counters
    for _ in range(args.host_rounds):
        t = time.process_time()
        await service.collect_round(ctx, only={"host"})
        cpu.append((time.process_time() - t) * 1000)
    median, worst = statistics.median(cpu), max(cpu)
    print(
        f"3. CPU of one collection round of this host: median {median:.1f} ms, "
        f"max {worst:.1f} ms of {args.host_rounds}, limit {ROUND_CPU_LIMIT_MS:.0f} ms, "
        f"ratio {median / ROUND_CPU_LIMIT_MS:.3f}"
    )
    async with ctx.db.read_session() as session:
        current = await service.current(session, SYSTEM)
    print(f"   (this host reported {len(current[0].metrics) if current else 0} metrics)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--host-rounds", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--full", action="store_true")
    asyncio.run(main(parser.parse_args()))
