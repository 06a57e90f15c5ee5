"""Reports benchmark (issue 18): a backup summary of 50+ A4 pages as a PDF, with the
memory it takes stated.

Creates a database (PostgreSQL on 127.0.0.1:5432, user postgres, trust; `--sqlite` for a
SQLite file), lets the migrations make it, fills one team's month with ``--databases``
databases backed up ``--per-database`` times and ``--failed`` failed backups with their
error messages, then runs the report job's own steps: the kind's aggregate SQL (the
document) and the PDF rendering (WeasyPrint). The defaults make 50-odd pages; the detail
tables stop at 1,000 rows each whatever the size (the document says so).

Prints: the time to collect and to render, pages and bytes, the peak of Python's heap
(tracemalloc) and of the process's RSS above where it started, each against its limit
with the ratio, and the load average (the machine is shared: wall times move with it).

    .venv/bin/python bench/reports.py                              # 50-odd pages, PostgreSQL
    .venv/bin/python bench/reports.py --sqlite --databases 100 --failed 100   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

from common import (
    HeapPeak,
    Peak,
    limit_ratio,
    load_line,
    migrated,
    postgres_url,
    scratch_database,
    sqlite_url,
)
from pypdf import PdfReader
from sqlalchemy import insert

from opscenter.core.db import Database
from opscenter.models import Backup, StorageProvider, Team
from opscenter.reports.jobs import render
from opscenter.reports.kinds import KINDS, Scope
from opscenter.reports.periods import parse_period

PAGES = 50
TIME_LIMIT_S = 60.0  # collect + render of the 50-page PDF
HEAP_LIMIT_MIB = 400.0  # Python's heap: WeasyPrint holds the whole layout
RSS_LIMIT_MIB = 600.0  # the process, Pango and cairo's buffers included
PERIOD = "2026-10"


async def seed(db: Database, databases: int, per_database: int, failed: int) -> Scope:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    async with db.write_session() as session:
        team = Team(name=f"bench-{uuid.uuid4().hex[:6]}")
        session.add(team)
        await session.flush()
        storage = StorageProvider(team_id=team.id, name="bench", type="local", config={})
        session.add(storage)
        await session.flush()
        rows = []
        for d in range(databases):
            for n in range(per_database):
                at = start + timedelta(hours=(d * per_database + n) % (31 * 24))
                rows.append(
                    {
                        "team_id": team.id,
                        "storage_id": storage.id,
                        "database_name": f"tenant_{d:05d}",
                        "db_type": "postgresql",
                        "status": "completed",
                        "size_bytes": 10_000_000 + d * 1000 + n,
                        "duration_seconds": 30.0 + n,
                        "created_at": at,
                        "completed_at": at + timedelta(seconds=30),
                    }
                )
        for f in range(failed):
            rows.append(
                {
                    "team_id": team.id,
                    "storage_id": storage.id,
                    "database_name": f"tenant_{f % databases:05d}",
                    "db_type": "postgresql",
                    "status": "failed",
                    "error_code": "dump_failed",
                    "error_message": f"pg_dump: error: connection to server failed ({f})",
                    "created_at": start + timedelta(hours=f % (31 * 24)),
                }
            )
        for i in range(0, len(rows), 5000):
            await session.execute(insert(Backup), rows[i : i + 5000])
        await session.commit()
        return Scope(team.id, team.name)


def verdict(figure: float, limit: float, unit: str) -> str:
    over = "" if figure <= limit else "  OVER"
    return f"{figure:8.1f} {unit}  {limit_ratio(figure, limit, unit)}{over}"


async def run(url: str, args: argparse.Namespace, label: str) -> None:
    async with migrated(url) as db:
        scope = await seed(db, args.databases, args.per_database, args.failed)
        period = parse_period(PERIOD, datetime.now(UTC).date())
        with tempfile.TemporaryFile() as out, Peak() as peak:
            started, cpu = time.perf_counter(), time.process_time()
            async with db.read_session() as session:
                doc = await KINDS["backup_summary"].build(session, scope, period)
            collected = time.perf_counter() - started
            await asyncio.to_thread(render, doc, "pdf", out)
            total = time.perf_counter() - started
            cpu = time.process_time() - cpu
            size = out.tell()
            out.seek(0)
            pages = len(PdfReader(out).pages)
        # Again under tracemalloc, which slows allocation-heavy code several times over:
        # its run gives the heap's peak, the one before the time.
        with tempfile.TemporaryFile() as out, HeapPeak() as traced:
            async with db.read_session() as session:
                doc = await KINDS["backup_summary"].build(session, scope, period)
            await asyncio.to_thread(render, doc, "pdf", out)
        heap = traced.peak
        rss = peak.peak - peak.base
        rows = args.databases * args.per_database + args.failed
        print(f"[{label}] {rows:,} backups of {args.databases:,} databases in {PERIOD}")
        print(f"[{label}] collect (aggregate SQL): {collected:8.2f} s")
        print(f"[{label}] PDF: {pages} pages, {size / 2**20:.1f} MiB")
        print(f"[{label}] collect + render: {verdict(total, TIME_LIMIT_S, 's')}")
        print(f"[{label}] of which CPU time of this process: {cpu:.1f} s (the rest is waiting)")
        print(f"[{label}] heap peak (tracemalloc): {verdict(heap / 2**20, HEAP_LIMIT_MIB, 'MiB')}")
        print(f"[{label}] RSS peak above start:    {verdict(rss, RSS_LIMIT_MIB, 'MiB')}")
        if pages < PAGES:
            print(f"[{label}] only {pages} pages (< {PAGES}): give more --databases and --failed")
        print(f"[{label}] {load_line()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", type=int, default=450)
    parser.add_argument("--per-database", type=int, default=3)
    parser.add_argument("--failed", type=int, default=400)
    parser.add_argument("--sqlite", action="store_true", help="on SQLite instead of PostgreSQL")
    args = parser.parse_args()
    if args.sqlite:
        with sqlite_url() as url:
            asyncio.run(run(url, args, "sqlite"))
        return
    with scratch_database("oc_bench_reports") as name:
        asyncio.run(run(postgres_url(name), args, "postgresql"))


if __name__ == "__main__":
    main()
