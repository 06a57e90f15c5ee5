"""/health and /metrics stay cheap with a long job history: the scrape-time queue gauges
read one grouped query on the jobs' (status, kind) index, and /health runs no query of
the jobs at all.

Fills the `jobs` table of a fresh metadata database (SQLite and PostgreSQL) with
``--jobs`` finished jobs plus ``--backlog`` queued and running ones, then times
``--requests`` in-process calls of each endpoint, and of the queue query alone (after a
warm-up), and prints p50 and p99 with the limit and the ratio (p99 / limit, below 1 is
within) and the load average: on a busy machine the p99 is mostly its scheduling.

    .venv/bin/python bench/ops_endpoints.py [--jobs 500000] [--backlog 2000] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
from common import postgres_url, running_app, scratch_database
from sqlalchemy import insert, select

from opscenter.core.clock import utcnow
from opscenter.models import Job, Team
from opscenter.ops import service as ops

LIMITS_MS = {"/health": 10.0, "/metrics": 50.0}
QUERY_LIMIT_MS = 20.0  # the queue gauges' query alone, within a /metrics
KINDS = ("backup", "verify", "restore", "command", "resource_collection")
BATCH = 10_000


@contextlib.contextmanager
def metadata_database(backend: str, data_dir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{data_dir / 'opscenter.db'}"
        return
    with scratch_database() as name:
        yield postgres_url(name)


async def fill(app: object, jobs: int, backlog: int) -> None:
    db = app.state.ctx.db  # type: ignore[attr-defined]
    now = utcnow()
    async with db.write_session() as session:
        team_id = await session.scalar(select(Team.id).limit(1))
        total = jobs + backlog
        for start in range(0, total, BATCH):
            rows = []
            for i in range(start, min(start + BATCH, total)):
                waiting = i >= jobs
                status = ("queued" if i % 2 else "running") if waiting else "succeeded"
                rows.append(
                    {
                        "team_id": team_id,
                        "kind": KINDS[i % len(KINDS)],
                        "status": status,
                        "created_at": now - timedelta(seconds=total - i),
                    }
                )
            await session.execute(insert(Job), rows)
            await session.commit()  # short transactions: SQLite has one writer


async def timed(call: Callable[[], Awaitable[object]], requests: int) -> list[float]:
    for _ in range(20):  # warm-up: pool, caches
        await call()
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def report(name: str, times: list[float], limit: float) -> None:
    p50 = statistics.median(times)
    p99 = statistics.quantiles(times, n=100)[98]
    print(
        f"  {name:<12} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  limit (p99) {limit:.0f} ms  "
        f"ratio {p99 / limit:.2f}  (load {os.getloadavg()[0]:.1f})"
    )


async def run(backend: str, args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        metadata_database(backend, Path(tmp)) as url,
    ):
        # The rate limit keeps its default (on), as this bench has always run it.
        async with running_app(
            url,
            OPSCENTER_RATE_LIMIT_ENABLED=True,
            OPSCENTER_RESOURCES_INTERVAL=0,
            OPSCENTER_EXTERNAL_JOBS_INTERVAL=0,
        ) as app:
            started = time.perf_counter()
            await fill(app, args.jobs, args.backlog)
            print(
                f"{backend}: {args.jobs} finished + {args.backlog} waiting jobs written in "
                f"{time.perf_counter() - started:.1f} s (load {os.getloadavg()[0]:.1f})"
            )
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
                for path, limit in LIMITS_MS.items():

                    async def get(path: str = path) -> None:
                        r = await c.get(path)
                        assert r.status_code == 200, r.text

                    report(path, await timed(get, args.requests), limit)
            ctx = app.state.ctx
            report(
                "queue query",
                await timed(lambda: ops.refresh_job_queue(ctx), args.requests),
                QUERY_LIMIT_MS,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500_000)
    parser.add_argument("--backlog", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        asyncio.run(run(backend, args))


if __name__ == "__main__":
    main()
