"""Incidents benchmark (issue 14), through the whole HTTP stack on PostgreSQL.

Creates its own database on 127.0.0.1:5432 (user postgres, trust), lets the app migrate
it, then fills it with SQL: ``--incidents`` incidents (100,000) with ``--per-incident``
timeline entries each (10: 1,000,000) and ``--tasks`` tasks (20,000: some 385 a week,
more than a busy team files) spread over 52 weeks. Then:

* the floor: an authenticated GET /auth/me, for scale (the machine's load moves it)
* the filtered incident list (a filter set per request, 20 rows and the total): p99, limit 50 ms
* an incident page's data: the incident and its timeline's first 100 entries: p99, limit 50 ms
* the SLA of 52 weeks (grouped query) with its forecast: p99, limit 100 ms
* a 25 MB evidence upload: the peak of Python's heap while it streams (tracemalloc),
  limit 8 MB: memory stays flat, the file is never held whole

Prints each figure, its limit and the ratio. The database is dropped at the end.

    .venv/bin/python bench/incidents.py                       # the issue's sizes
    .venv/bin/python bench/incidents.py --incidents 10000 --requests 100   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from common import (
    HeapPeak,
    admin_client,
    limit_ratio,
    percentile,
    postgres_url,
    psql,
    running_app,
    scratch_database,
    time_requests,
)


def fill(db: str, incidents: int, per_incident: int, tasks: int) -> None:
    team = psql(db, "SELECT min(id) FROM teams")
    psql(
        db,
        f"""
        INSERT INTO incidents (team_id, jira_id, title, description, severity, status,
            environment, squad, affected_services, attack_techniques, alert_count, created_at,
            updated_at, acknowledged_at, resolved_at)
        SELECT {team}, 'INC-' || g, 'Incident ' || g, 'Generated for the benchmark ' || g,
            (ARRAY['critical','high','medium','low'])[1 + g % 4],
            (ARRAY['open','investigating','mitigated','resolved','closed'])[1 + g % 5],
            (ARRAY['production','staging','development'])[1 + g % 3],
            'squad-' || (g % 20), '["api"]', '[]', 0,
            now() - (({incidents} - g) * interval '10 minutes'),
            now() - (({incidents} - g) * interval '10 minutes'),
            now() - (({incidents} - g) * interval '10 minutes') + interval '5 minutes',
            CASE WHEN g % 5 >= 3 THEN now() - (({incidents} - g) * interval '10 minutes')
                + interval '2 hours' END
        FROM generate_series(1, {incidents}) AS g;
        UPDATE incidents SET jira_id = 'INC-' || id;
        INSERT INTO incident_events (incident_id, at, actor, kind, field, old_value, new_value)
        SELECT i.id, i.created_at + k * interval '1 minute', 'bench', 'field', 'severity',
            'low', 'high'
        FROM incidents AS i, generate_series(1, {per_incident}) AS k;
        INSERT INTO incident_tasks (team_id, title, description, squad, status,
            estimated_hours, actual_hours, created_at, updated_at)
        SELECT {team}, 'Task ' || g, '', 'squad-' || (g % 20),
            (ARRAY['todo','in_progress','done','done'])[1 + g % 4],
            1 + g % 8, g % 9, now() - (g % 364) * interval '1 day',
            now() - (g % 364) * interval '1 day'
        FROM generate_series(1, {tasks}) AS g;
        """,
    )
    # What autovacuum does to a table that was just written: statistics and the
    # visibility map (index-only counts need it).
    psql(db, "VACUUM ANALYZE incidents, incident_events, incident_tasks")


async def measure(
    name: str, limit_ms: float, n: int, call: Callable[[int], Awaitable[httpx.Response]]
) -> None:
    samples, _ = await time_requests(call, n, warm=20)
    figure = percentile(samples, 0.99)
    print(
        f"{name:<44} p99 {figure:7.1f} ms  (median {statistics.median(samples):6.1f} ms, "
        f"n={n})  {limit_ratio(figure, limit_ms, 'ms')}"
    )


async def upload_peak(client: httpx.AsyncClient, incident_id: int, size: int) -> None:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nBig log\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\nlog\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.log"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    line = b"2026-12-06T00:00:00Z GET /checkout 200 4012ms upstream=10.0.0.7\n"
    chunk = line * (65536 // len(line))

    async def body() -> AsyncIterator[bytes]:
        yield head
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            sent += len(piece)
            yield piece
        yield tail

    with HeapPeak() as heap:
        started = time.perf_counter()
        r = await client.post(
            f"/api/v1/infra/incidents/{incident_id}/evidence",
            content=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        elapsed = time.perf_counter() - started
    peak = heap.peak
    assert r.status_code == 201, r.text
    assert r.json()["size_bytes"] == size
    limit = 8 * 1024 * 1024
    print(
        f"{'25 MB evidence upload: peak Python heap':<44} {peak / 2**20:7.1f} MiB "
        f"({size / 2**20:.0f} MiB file, {elapsed:.1f} s)  "
        f"{limit_ratio(peak / 2**20, limit / 2**20, 'MiB')}"
    )


async def run(args: argparse.Namespace) -> None:
    with scratch_database() as name:
        async with running_app(postgres_url(name)) as app:
            started = time.perf_counter()
            fill(name, args.incidents, args.per_incident, args.tasks)
            entries = args.incidents * args.per_incident
            took = time.perf_counter() - started
            print(
                f"filled {args.incidents:,} incidents, {entries:,} timeline entries, "
                f"{args.tasks:,} tasks in {took:.0f} s (load average {os.getloadavg()[0]:.1f})"
            )
            async with admin_client(app) as c:
                rng = random.Random(14)

                async def me(i: int) -> httpx.Response:
                    return await c.get("/api/v1/auth/me")

                # The floor: what any authenticated request costs here, for scale.
                await measure("floor: GET /auth/me", 50, args.requests, me)
                filters = [
                    {"environment": "production"},
                    {"severity": "critical", "status": "open"},
                    {"environment": "staging", "severity": "high"},
                    {"squad": "squad-7"},
                    {"status": "resolved", "environment": "development"},
                    {},
                ]

                async def listed(i: int) -> httpx.Response:
                    params = filters[i % len(filters)] | {"limit": 20}
                    return await c.get("/api/v1/infra/incidents", params=params)

                await measure("filtered incident list (20 rows + total)", 50, args.requests, listed)

                async def incident_page(i: int) -> httpx.Response:
                    ident = rng.randint(1, args.incidents)
                    (await c.get(f"/api/v1/infra/incidents/{ident}")).raise_for_status()
                    return await c.get(
                        f"/api/v1/infra/incidents/{ident}/timeline", params={"limit": 100}
                    )

                await measure(
                    "incident + its timeline (2 requests)", 50, args.requests, incident_page
                )

                async def sla(i: int) -> httpx.Response:
                    params = {"weeks": 52} | ({"squad": "squad-3"} if i % 2 else {})
                    return await c.get("/api/v1/infra/sla-metrics", params=params)

                await measure("SLA metrics, 52 weeks (+ forecast)", 100, args.requests, sla)
                await upload_peak(c, args.incidents, 25 * 1024 * 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--per-incident", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
