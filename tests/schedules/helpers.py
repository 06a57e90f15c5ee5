"""Helpers for the schedule and retention tests: servers, a real PostgreSQL source
database, schedules, and finishing jobs the tests did not hand to the runner."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from opscenter.core import cron
from opscenter.jobs import service as jobs
from opscenter.models import Job, Schedule
from tests.conftest import Api
from tests.helpers import psql

PG_SERVER = {
    "type": "postgresql",
    "host": "127.0.0.1",
    "port": 5432,
    "credentials": {"username": "postgres"},
}


def uid(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def source_db() -> Iterator[str]:
    """A small real PostgreSQL database to back up, dropped afterwards."""
    name = f"oc_sched_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{name}"')
    psql(
        "CREATE TABLE items (id serial PRIMARY KEY, label text);"
        "INSERT INTO items (label) SELECT 'item ' || g FROM generate_series(1, 50) g;",
        name,
    )
    yield name
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def make_server(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/servers", json={"name": uid("pg-"), **PG_SERVER, **fields})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def make_schedule(client: httpx.AsyncClient, server_id: int, **fields: Any) -> dict[str, Any]:
    body = {
        "name": uid("sch-"),
        "server_id": server_id,
        "database_name": "oc_not_there",
        "cron_expression": "0 3 * * *",
        **fields,
    }
    r = await client.post("/api/v1/schedules", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def set_next_run(api: Api, schedule_id: int, after: datetime) -> datetime:
    """Move a schedule's next slot to the first one after `after` (tests travel in time)."""
    ctx = api.app.state.ctx
    async with ctx.db.write_session() as session:
        schedule = await session.get(Schedule, schedule_id)
        assert schedule is not None
        slot = cron.next_after(schedule.cron_expression, cron.zone(schedule.timezone), after)
        assert slot is not None
        schedule.next_run = slot
        await session.commit()
    return slot


async def end_job(api: Api, job_id: int) -> None:
    """Cancel a job the test kept from the runner (the real cancel path: the job ends
    `cancelled` and the backup finisher marks its backup cancelled)."""
    ctx = api.app.state.ctx
    async with ctx.db.write_session() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        jobs.request_cancel(job)
        await session.commit()
    await ctx.runner.signal_cancel(job_id)


async def disable(api: Api, schedule_id: int) -> None:
    """Tests that travel to the past leave their schedule disabled, so no other test's
    scheduler round picks it up."""
    async with api.app.state.ctx.db.write_session() as session:
        await session.execute(
            update(Schedule).where(Schedule.id == schedule_id).values(enabled=False, next_run=None)
        )
        await session.commit()


async def wait_job(api: Api, client: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    await api.app.state.ctx.runner.wait(job_id, limit_seconds=120)
    job: dict[str, Any] = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    return job
