"""Security scan benchmark (issue 15), through the API and the job runner on PostgreSQL.

Creates its own database on 127.0.0.1:5432 (user postgres, trust), lets the app migrate
it, then fills it with SQL: ``--users`` enabled users that never logged in since they
were made 200 days ago, each with an API key that never expires: two failing subjects
per user for the posture scan. Then:

* the first posture scan: every failure a new finding, limit 10 s
* the same scan again: every finding a duplicate (only `last_seen` moves), limit 5 s
* the scan after the keys got an expiry and the users logged in: every one of those
  findings closes, limit 5 s
* the surface probe alone: a connect scan of ``--ports`` ports on 127.0.0.1 (32 at once,
  closed ports answer at once on loopback), limit 2 s

Prints each figure, its limit and the ratio, with the load average. The database is
dropped at the end.

    .venv/bin/python bench/security_scan.py                 # 10,000 users, 1,000 ports
    .venv/bin/python bench/security_scan.py --users 1000    # quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import httpx
from common import admin_client, limit_ratio, postgres_url, psql, running_app, scratch_database

from opscenter.security import surface


def fill(db: str, users: int) -> None:
    psql(
        db,
        f"""
        INSERT INTO users (username, email, full_name, password_hash, role_id, is_active,
            session_version, created_at, updated_at)
        SELECT 'bench' || g, 'bench' || g || '@example.com', '', 'x',
            (SELECT id FROM roles WHERE name = 'viewer'), true, 1,
            now() - interval '200 days', now() - interval '200 days'
        FROM generate_series(1, {users}) AS g;
        INSERT INTO api_keys (name, prefix, key_hash, user_id, role_id, created_at, updated_at)
        SELECT 'key-' || u.id, 'bk' || u.id, md5(u.id::text) || md5(u.username),
            u.id, u.role_id, now(), now()
        FROM users AS u WHERE u.username LIKE 'bench%';
        """,
    )
    psql(db, "VACUUM ANALYZE users, api_keys")


def fix(db: str) -> None:
    psql(
        db,
        """
        UPDATE api_keys SET expires_at = now() + interval '30 days' WHERE name LIKE 'key-%';
        UPDATE users SET last_login = now() WHERE username LIKE 'bench%';
        """,
    )


def report(name: str, seconds: float, limit: float, extra: str = "") -> None:
    print(
        f"{name:<52} {seconds:6.2f} s  {limit_ratio(seconds, limit, 's')}"
        f"{'  ' + extra if extra else ''}"
    )


async def scan(app: Any, c: httpx.AsyncClient) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    r = await c.post("/api/v1/security/scan", json={"scope": "posture"})
    r.raise_for_status()
    await app.state.ctx.runner.wait(r.json()["job_id"], limit_seconds=600)
    took = time.perf_counter() - started
    done: dict[str, Any] = (await c.get(r.json()["status_url"])).json()
    assert done["status"] == "succeeded", done
    return took, done


async def run(args: argparse.Namespace) -> None:
    with scratch_database() as name:
        async with running_app(postgres_url(name)) as app:
            fill(name, args.users)
            print(f"filled {args.users:,} users with {args.users:,} keys "
                  f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
            async with admin_client(app) as c:
                # The app's first write pays for warming its pools and caches (seconds
                # on a loaded machine): a write of no consequence takes it, not a scan.
                started = time.perf_counter()
                warm = await c.put("/api/v1/security/surface-allowlist", json={"entries": []})
                warm.raise_for_status()
                print(f"first write request (warm-up): {time.perf_counter() - started:.2f} s")
                took, first = await scan(app, c)
                assert first["new"] >= 2 * args.users, first
                report("posture scan, all new", took, 10, f"({first['new']:,} new findings)")
                took, again = await scan(app, c)
                assert again["new"] == 0 and again["closed"] == 0, again
                report("posture scan, all duplicates", took, 5)
                fix(name)
                took, fixed = await scan(app, c)
                assert fixed["closed"] >= 2 * args.users, fixed
                report("posture scan, all closing", took, 5, f"({fixed['closed']:,} closed)")
            target = surface.Target(0, "127.0.0.1", ())
            ports = set(range(40000, 40000 + args.ports))
            started = time.perf_counter()
            seen = await surface.probe(target, "127.0.0.1", ports, 0.5)
            took = time.perf_counter() - started
            report(
                f"connect scan of {args.ports:,} ports",
                took,
                2,
                f"({len(seen.open_ports)} open)",
            )
            print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--ports", type=int, default=1_000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
