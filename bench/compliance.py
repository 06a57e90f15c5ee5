"""Compliance benchmark: assessing ISO/IEC 27001:2022 over 90 days of a realistic
installation (50 targets backed up hourly: 108,000 backups, a daily checksum and a weekly
restore test each, 2,000 incidents, 200 accounts, 100 API keys, an audit trail of 50,000
entries), against walking the audit chain alone (which the assessment includes), in the
same run; the best of three rounds each. Then again as a running installation has it,
with a checkpoint of the chain and SINCE_CHECKPOINT entries written after it: only those
are walked.

Runs the service's own code (`assess_framework`, as `GET .../assessment` does) on a
PostgreSQL database it creates on 127.0.0.1:5432 (user postgres, trust) and drops, and
with `--sqlite` on a SQLite file in a temporary directory.

    .venv/bin/python bench/compliance.py                 # full size
    .venv/bin/python bench/compliance.py --scale 0.1 --sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import timedelta
from typing import Any

from common import (
    against_floor,
    load_line,
    migrated,
    postgres_url,
    scratch_database,
    sqlite_url,
)
from sqlalchemy import insert

from opscenter.audit import checkpoints
from opscenter.audit import service as audit
from opscenter.audit.service import GENESIS, _digest
from opscenter.compliance import service
from opscenter.core.clock import utcnow
from opscenter.core.db import Database
from opscenter.core.principal import SYSTEM
from opscenter.models import (
    ApiKey,
    AuditLog,
    Backup,
    Incident,
    Role,
    Schedule,
    Server,
    StorageProvider,
    Team,
    User,
    VerificationRun,
)

LIMIT = 3.0  # x the audit chain walk alone
SINCE_CHECKPOINT = 200  # entries written after the last checkpoint
ROUNDS = 3
DAYS = 90
BATCH = 5000


async def bulk(db: Database, model: Any, rows: list[dict[str, Any]]) -> list[int]:
    ids: list[int] = []
    async with db.write_session() as session:
        for i in range(0, len(rows), BATCH):
            result = await session.execute(insert(model).returning(model.id), rows[i : i + BATCH])
            ids += [r for (r,) in result.all()]
        await session.commit()
    return ids


async def seed(db: Database, scale: float) -> None:
    rng = random.Random(7)
    now = utcnow()
    start = now - timedelta(days=DAYS)
    targets, users, keys = max(2, int(50 * scale)), int(200 * scale), int(100 * scale)
    async with db.write_session() as session:
        team = Team(name=f"bench-{uuid.uuid4().hex[:6]}")
        session.add(team)
        await session.flush()
        role = Role(name=f"bench-{uuid.uuid4().hex[:6]}", permissions=["read:compliance"])
        session.add(role)
        await session.flush()
        role_id = role.id
        storage = StorageProvider(team_id=team.id, name="local", type="local", config={})
        server = Server(team_id=team.id, name="db1", type="postgresql")
        session.add_all([storage, server])
        await session.flush()
        for t in range(targets):
            session.add(
                Schedule(
                    team_id=team.id,
                    name=f"hourly-{t}",
                    server_id=server.id,
                    database_name=f"db{t}",
                    cron_expression="0 * * * *",
                    created_at=start - timedelta(days=30),
                )
            )
        await session.commit()
        team_id, server_id, storage_id = team.id, server.id, storage.id

    backups = []
    for t in range(targets):
        for h in range(DAYS * 24):
            at = start + timedelta(hours=h, minutes=rng.randint(0, 5))
            failed = rng.random() < 0.01
            backups.append(
                {
                    "team_id": team_id,
                    "server_id": server_id,
                    "storage_id": storage_id,
                    "database_name": f"db{t}",
                    "db_type": "postgresql",
                    "status": "failed" if failed else "completed",
                    "is_encrypted": True,
                    "created_at": at,
                    "updated_at": at,
                    "completed_at": None if failed else at + timedelta(seconds=40),
                }
            )
    backup_ids = await bulk(db, Backup, backups)
    runs = []
    for n, (row, backup_id) in enumerate(zip(backups, backup_ids, strict=True)):
        if row["status"] != "completed" or n % 24:
            continue
        test_type = "restore" if n % (24 * 7) == 0 else "checksum"
        runs.append(
            {
                "team_id": team_id,
                "backup_id": backup_id,
                "test_type": test_type,
                "status": "passed",
                "finished_at": row["completed_at"] + timedelta(minutes=5),
                "created_at": row["completed_at"],
                "updated_at": row["completed_at"],
            }
        )
    await bulk(db, VerificationRun, runs)

    made = start - timedelta(days=200)
    people = [
        {
            "username": f"user{i}",
            "email": f"user{i}@example.com",
            "password_hash": "x",
            "role_id": role_id,
            "created_at": made,
            "updated_at": made,
            "last_login": now - timedelta(days=rng.randint(0, 120)),
        }
        for i in range(users)
    ]
    user_ids = await bulk(db, User, people)
    await bulk(
        db,
        ApiKey,
        [
            {
                "name": f"key{i}",
                "prefix": f"p{i}",
                "key_hash": uuid.uuid4().hex,
                "user_id": user_ids[i % len(user_ids)],
                "role_id": role_id,
                "expires_at": None if i % 4 == 0 else now + timedelta(days=90),
                "last_used_at": now - timedelta(days=rng.randint(0, 120)),
                "created_at": made,
                "updated_at": made,
            }
            for i in range(keys)
        ],
    )
    incidents = []
    for i in range(int(2000 * scale)):
        opened = start + timedelta(minutes=rng.randint(0, DAYS * 24 * 60 - 600))
        incidents.append(
            {
                "team_id": team_id,
                "title": f"incident {i}",
                "description": "d",
                "severity": rng.choice(["critical", "high", "medium", "low"]),
                "status": "resolved",
                "environment": "production",
                "squad": "platform",
                "created_at": opened,
                "updated_at": opened,
                "acknowledged_at": opened + timedelta(minutes=rng.randint(1, 90)),
                "resolved_at": opened + timedelta(hours=rng.randint(1, 30)),
            }
        )
    await bulk(db, Incident, incidents)

    trail = []
    prev = GENESIS
    for i in range(int(50_000 * scale)):
        row = AuditLog(
            created_at=start + timedelta(seconds=i * 150),
            user_id=None,
            username="bench",
            api_key_id=None,
            action="backup.create",
            resource_type="backup",
            resource_id=str(i),
            outcome="success",
            details={"n": i},
            ip_address=None,
            user_agent=None,
            request_id=None,
            prev_hash=prev,
        )
        row.hash = prev = _digest(row)
        trail.append(
            {c.name: getattr(row, c.name) for c in AuditLog.__table__.columns if c.name != "id"}
        )
    await bulk(db, AuditLog, trail)
    print(
        f"seeded: {len(backups):,} backups, {len(runs):,} verification runs, "
        f"{len(incidents):,} incidents, {users} users, {keys} keys, {len(trail):,} audit entries"
    )


async def best(work: Any) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await work()
        times.append(time.perf_counter() - started)
    return min(times)


async def run(url: str, scale: float, label: str) -> None:
    async with migrated(url) as db:
        await seed(db, scale)
        now = utcnow()

        async def chain() -> None:
            async with db.read_session() as session:
                assert (await audit.verify_chain(session)).valid

        async def assess() -> None:
            async with db.read_session() as session:
                a = await service.assess_framework(
                    session, SYSTEM, "iso27001", now - timedelta(days=DAYS), now
                )
                assert a.summary["met"] > 0

        floor = await best(chain)
        took = await best(assess)
        print(
            f"{label}: audit chain alone {floor:.2f} s; ISO 27001 assessment "
            f"{against_floor(took, floor, LIMIT, width=0)}"
        )
        # As a running installation has it: a checkpoint, then the entries written since.
        await checkpoints.checkpoint(db)
        async with db.write_session() as session:
            for i in range(SINCE_CHECKPOINT):
                await audit.record(
                    session, action="backup.create", username="bench", details={"n": i}
                )
            await session.commit()
        took = await best(assess)
        print(
            f"{label}: ISO 27001 assessment after a checkpoint, {SINCE_CHECKPOINT} entries "
            f"since: {took:.2f} s, {took / floor:.2f}x the whole chain's walk ({load_line()})"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    if args.sqlite:
        with sqlite_url() as url:
            asyncio.run(run(url, args.scale, "SQLite"))
        return
    with scratch_database("oc_bench_compliance") as name:
        asyncio.run(run(postgres_url(name), args.scale, "PostgreSQL"))


if __name__ == "__main__":
    main()
