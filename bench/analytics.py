"""Analytics benchmark (issue 18), through the whole HTTP stack on PostgreSQL.

Creates its own database on 127.0.0.1:5432 (user postgres, trust), lets the app migrate
it, then fills it with SQL: ``--backups`` backups (100,000) over a year across
``--targets`` targets (500 databases on 100 servers, each with a daily schedule), some
failed, with sizes and durations that wobble around each target's own level and a few
injected anomalies; ``--runs`` verification runs (10,000, a third of them restore tests)
and ``--incidents`` incidents (10,000). Then, as the admin (every team):

* the floor: an authenticated GET /auth/me, for scale (the machine's load moves it)
* GET /analytics/dashboard-data: p99, limit 150 ms (its insights are the last computed,
  renewed beside the request once a minute old: `insights.recent`); then as the first call
  for a set of teams (or after ten idle minutes), which computes them, for information
* GET /analytics/insights over all targets: p99, limit 1 s
* GET /analytics/metrics?window=30d, for information

Prints each figure, its limit and the ratio. The database is dropped at the end.

    .venv/bin/python bench/analytics.py                          # the issue's sizes
    .venv/bin/python bench/analytics.py --backups 20000 --requests 30   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
from common import (
    admin_client,
    limit_ratio,
    percentile,
    postgres_url,
    psql,
    running_app,
    scratch_database,
    time_requests,
)

SERVERS = 100


def fill(db: str, backups: int, targets: int, runs: int, incidents: int) -> None:
    team = psql(db, "SELECT min(id) FROM teams")
    per_server = max(1, targets // SERVERS)
    psql(
        db,
        f"""
        INSERT INTO servers (team_id, name, description, type, environment, host, paths, tags,
            credential_fields, health_status, created_at, updated_at)
        SELECT {team}, 'db-' || g, '', 'local', 'production', '', '[]', '{{}}', '[]',
            'unknown', now(), now()
        FROM generate_series(1, {SERVERS}) AS g;
        INSERT INTO storage_providers (team_id, name, type, config, secret_fields, is_default,
            is_active, created_at, updated_at)
        VALUES ({team}, 'bench', 'local', '{{"path": "/tmp"}}', '[]', false, true, now(), now());
        INSERT INTO schedules (team_id, name, description, server_id, database_name,
            cron_expression, timezone, backup_type, storage_ids, priority, enabled,
            notify_on_success, notify_on_failure, misfire_policy, created_at, updated_at)
        SELECT {team}, 'daily ' || s.id || '/' || d, '', s.id, 'db_' || d, '0 3 * * *', 'UTC',
            'full', '[]', 5, true, false, true, 'run_once', now(), now()
        FROM servers AS s, generate_series(1, {per_server}) AS d;
        -- g-th backup: target g % targets, going back a year; every 97th failed, every
        -- 5,003rd far smaller than its target's level (an anomaly to find)
        INSERT INTO backups (team_id, server_id, storage_id, database_name, db_type,
            backup_type, status, storage_key, size_bytes, original_size_bytes,
            is_encrypted, compression_type, encryption_key_ids, row_counts,
            verification_status, started_at, completed_at, duration_seconds, imported,
            created_at, updated_at)
        SELECT {team}, s.id, (SELECT min(id) FROM storage_providers),
            'db_' || (1 + t % {per_server}),
            'postgresql', 'full', CASE WHEN g % 97 = 0 THEN 'failed' ELSE 'completed' END,
            'k/' || g,
            CASE WHEN g % 97 = 0 THEN NULL
                 WHEN g % 5003 = 0 THEN 1000000
                 ELSE (100000000 + t * 1000000 + (g % 13) * 100000) END,
            NULL, true, 'zstd', '[]', '{{}}',
            CASE WHEN g % 3 = 0 THEN 'checksum_ok' ELSE 'unverified' END,
            at, CASE WHEN g % 97 = 0 THEN NULL ELSE at + interval '2 minutes' END,
            CASE WHEN g % 97 = 0 THEN NULL ELSE 100 + (g % 11) END, false, at, at
        FROM (
            SELECT g, g % {targets} AS t,
                now() - (({backups} - g) * (interval '365 days' / {backups})) AS at
            FROM generate_series(1, {backups}) AS g
        ) AS b
        JOIN servers AS s ON s.name = 'db-' || (1 + (b.t / {per_server}) % {SERVERS});
        INSERT INTO verification_runs (team_id, backup_id, test_type, scope, trigger, status,
            detail, table_comparison, duration_seconds, rto_seconds, created_at, updated_at)
        SELECT {team}, b.id, CASE WHEN b.id % 3 = 0 THEN 'restore' ELSE 'checksum' END,
            'full', 'schedule', CASE WHEN b.id % 50 = 0 THEN 'failed' ELSE 'passed' END, '',
            '[]', 30, CASE WHEN b.id % 3 = 0 THEN 60 + b.id % 120 END,
            b.created_at + interval '1 hour', b.created_at + interval '1 hour'
        FROM backups AS b WHERE b.status = 'completed' ORDER BY b.id DESC LIMIT {runs};
        INSERT INTO incidents (team_id, title, description, severity, status, environment,
            squad, affected_services, attack_techniques, alert_count, created_at, updated_at,
            acknowledged_at, resolved_at)
        SELECT {team}, 'Incident ' || g, '', (ARRAY['critical','high','medium','low'])[1 + g % 4],
            (ARRAY['open','resolved','closed'])[1 + g % 3], 'production', 'squad', '[]', '[]', 0,
            now() - ({incidents} - g) * (interval '365 days' / {incidents}),
            now() - ({incidents} - g) * (interval '365 days' / {incidents}),
            now() - ({incidents} - g) * (interval '365 days' / {incidents}) + interval '7 minutes',
            CASE WHEN g % 3 > 0 THEN now() - ({incidents} - g) * (interval '365 days' / {incidents})
                + interval '3 hours' END
        FROM generate_series(1, {incidents}) AS g;
        """,
    )
    psql(db, "VACUUM ANALYZE backups, verification_runs, incidents, schedules, servers")


async def measure(
    name: str, limit_ms: float | None, n: int, call: Callable[[], Awaitable[httpx.Response]]
) -> httpx.Response:
    samples, r = await time_requests(lambda _: call(), n, warm=5)
    p50, p99 = statistics.median(samples), percentile(samples, 0.99)
    tail = f"  {limit_ratio(p99, limit_ms, 'ms')}" if limit_ms else ""
    print(f"{name:<46} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  (n={n}){tail}")
    return r


async def run(args: argparse.Namespace) -> None:
    with scratch_database() as name:
        async with running_app(postgres_url(name)) as app:
            started = time.perf_counter()
            fill(name, args.backups, args.targets, args.runs, args.incidents)
            print(
                f"filled {args.backups:,} backups of {args.targets} targets, "
                f"{args.runs:,} verification runs, {args.incidents:,} incidents in "
                f"{time.perf_counter() - started:.0f} s "
                f"(load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})"
            )
            async with admin_client(app) as c:
                n = args.requests
                await measure("floor: GET /auth/me", None, n, lambda: c.get("/api/v1/auth/me"))
                board = await measure(
                    "GET /analytics/dashboard-data",
                    150,
                    n,
                    lambda: c.get("/api/v1/analytics/dashboard-data"),
                )
                from opscenter.analytics import insights

                async def first() -> httpx.Response:
                    insights._recent.clear()
                    return await c.get("/api/v1/analytics/dashboard-data")

                await measure("GET /analytics/dashboard-data, first call", None, n, first)
                found = await measure(
                    "GET /analytics/insights (all targets)",
                    1000,
                    n,
                    lambda: c.get("/api/v1/analytics/insights", params={"limit": 1000}),
                )
                await measure(
                    "GET /analytics/metrics?window=30d",
                    None,
                    n,
                    lambda: c.get("/api/v1/analytics/metrics", params={"window": "30d"}),
                )
                kinds = found.json()["items"]
                print(
                    f"dashboard: {board.json()['backups']['finished']:,} backups this week; "
                    f"insights: {len(kinds)} ({', '.join(sorted({i['kind'] for i in kinds}))})"
                )
            print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backups", type=int, default=100_000)
    parser.add_argument("--targets", type=int, default=500)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
