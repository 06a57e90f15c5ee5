"""FinOps benchmark: importing a generated FOCUS CSV against reading the same file with the
standard `csv` module alone, peak memory at two file sizes (flat = constant memory), and
the breakdown by service and by tag over those lines on PostgreSQL.

Creates its own PostgreSQL database on 127.0.0.1:5432 (user postgres, trust), runs the
migrations, imports through the import job's own code (`finops.importer.run`: parse,
COPY in batches, daily roll-ups) and drops the database at the end.

    .venv/bin/python bench/finops_import.py                     # 1,000,000 lines
    .venv/bin/python bench/finops_import.py --lines 100000      # quick
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import statistics
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from common import Peak, limit_ratio, load_line, migrated, postgres_url, scratch_database

from opscenter.core.db import Database
from opscenter.core.principal import SYSTEM
from opscenter.finops import importer, service
from opscenter.models import CostImport, Team

IMPORT_LIMIT = 4.0  # x the csv module alone
BREAKDOWN_LIMIT_MS = 200.0
SERVICES = [f"Service {i:02d}" for i in range(40)]
REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1"]
TEAMS = ["web", "db", "data", "ml", "ops", "payments"]
ENVS = ["production", "staging", "development"]


def generate(path: Path, lines: int, start: date) -> None:
    rng = random.Random(42)
    header = [
        "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd",
        "ChargeCategory", "ServiceProviderName", "ServiceName", "ResourceId", "RegionId",
        "BilledCost", "EffectiveCost", "BillingCurrency", "Tags",
    ]  # fmt: skip
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(lines):
            day = start + timedelta(days=i % 30)
            month = day.replace(day=1).isoformat()
            billed = round(rng.uniform(0.001, 25.0), 6)
            tags = {"team": rng.choice(TEAMS), "env": rng.choice(ENVS)}
            w.writerow(
                [
                    f"{month}T00:00:00Z",
                    f"{month}T00:00:00Z",
                    f"{day}T{i % 24:02d}:00:00Z",
                    f"{day}T{i % 24:02d}:59:59Z",
                    "Usage",
                    "AWS",
                    rng.choice(SERVICES),
                    f"arn:aws:ec2:{rng.choice(REGIONS)}:123456789012:instance/i-{i:012x}",
                    rng.choice(REGIONS),
                    billed,
                    round(billed * 0.9, 6),
                    "USD" if i % 10 else "EUR",
                    json.dumps(tags),
                ]
            )


def read_with_csv(path: Path) -> int:
    rows = 0
    with path.open(newline="", encoding="utf-8") as f:
        for _ in csv.reader(f):
            rows += 1
    return rows


async def import_file(db: Database, team_id: int, path: Path) -> tuple[float, float, int]:
    size = await asyncio.to_thread(lambda: path.stat().st_size)
    async with db.write_session() as session:
        imp = CostImport(
            team_id=team_id,
            filename=path.name,
            format="focus",
            sha256=uuid.uuid4().hex,
            size_bytes=size,
        )
        session.add(imp)
        await session.commit()
    progress = importer.Progress()

    async def ignore(_: float) -> None:
        return None

    with Peak() as peak:
        started = time.perf_counter()
        await importer.run(db, imp.id, path, progress, ignore)
        elapsed = time.perf_counter() - started
    return elapsed, peak.peak - peak.base, progress.rows - progress.rejected


async def breakdown_ms(db: Database, span: service.Span, aggregate: str) -> float:
    times = []
    for _ in range(7):
        async with db.read_session() as session:
            started = time.perf_counter()
            out = await service.breakdown(session, SYSTEM, span, aggregate)
            times.append((time.perf_counter() - started) * 1000)
            assert out.items
    return statistics.median(times)


async def run(url: str, lines: int) -> None:
    async with migrated(url) as db:
        async with db.write_session() as session:
            team = Team(name="bench")
            session.add(team)
            await session.commit()
        start = date.today() - timedelta(days=29)
        with tempfile.TemporaryDirectory() as tmp:
            small, big = Path(tmp) / "small.csv", Path(tmp) / "big.csv"
            await asyncio.to_thread(generate, small, lines // 5, start)
            await asyncio.to_thread(generate, big, lines, start)
            size = big.stat().st_size / 2**20
            print(f"file: {lines:,} lines, {size:.0f} MiB (and {lines // 5:,} lines)")
            started = time.perf_counter()
            assert await asyncio.to_thread(read_with_csv, big) == lines + 1
            floor = time.perf_counter() - started
            small_time, small_mem, _ = await import_file(db, team.id, small)
            big_time, big_mem, rows = await import_file(db, team.id, big)
            assert rows == lines
        ratio = big_time / floor
        print(f"csv module alone:   {floor:7.2f} s")
        print(
            f"import (ours):      {big_time:7.2f} s  ratio {ratio:.1f}x  limit {IMPORT_LIMIT:.0f}x"
            f"  ({'within' if ratio <= IMPORT_LIMIT else 'OVER'} the goal),"
            f" {rows / big_time:,.0f} lines/s"
        )
        print(
            f"peak memory growth: {small_mem:6.1f} MiB at {lines // 5:,} lines,"
            f" {big_mem:6.1f} MiB at {lines:,} lines"
            f" (ratio {big_mem / max(small_mem, 0.1):.2f}; 1.0 = flat; import of the small file"
            f" took {small_time:.2f} s)"
        )
        span = service.Span(start, start + timedelta(days=30))
        for aggregate in ("service", "tag:team"):
            ms = await breakdown_ms(db, span, aggregate)
            print(
                f"breakdown by {aggregate:<8} over {lines + lines // 5:,} lines:"
                f" {ms:6.1f} ms  {limit_ratio(ms, BREAKDOWN_LIMIT_MS, 'ms')}"
            )
        print(load_line())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    with scratch_database("oc_bench_finops") as name:
        asyncio.run(run(postgres_url(name), args.lines))


if __name__ == "__main__":
    main()
