"""/metrics beyond the requests: the job queue read at scrape time, and what ended jobs
and completed backups leave in the process that ran them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select

from opscenter.core.clock import utcnow
from opscenter.models import Job, Team
from opscenter.runtime import build_context, running
from tests.conftest import Api, make_settings
from tests.core.helpers import uid
from tests.helpers import psql
from tests.ops.helpers import unused_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: Api) -> Samples:
    async with api.client() as c:  # public, for the scraper
        r = await c.get("/metrics")
    assert r.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_queue_gauges_count_queued_and_running_jobs(api: Api) -> None:
    kind = uid("probe_")  # a kind of its own: nothing runs it, nothing else counts it
    db = api.app.state.ctx.db
    async with db.write_session() as session:
        team_id = await session.scalar(select(Team.id).order_by(Team.id).limit(1))
        for age, status in ((90, "queued"), (30, "queued"), (5, "queued"), (60, "running")):
            created = utcnow() - timedelta(seconds=age)
            session.add(Job(team_id=team_id, kind=kind, status=status, created_at=created))
        await session.commit()
    try:
        samples = await scrape(api)
        assert value(samples, "opscenter_jobs_queued", kind=kind) == 3
        assert value(samples, "opscenter_jobs_running", kind=kind) == 1
        oldest = value(samples, "opscenter_job_oldest_queued_age_seconds", kind=kind)
        assert oldest is not None and 90 <= oldest < 90 + 60
        # A kind the runner knows reads 0 rather than vanishing when nothing waits.
        assert value(samples, "opscenter_jobs_queued", kind="backup") is not None
    finally:
        async with db.write_session() as session:
            await session.execute(delete(Job).where(Job.kind == kind))
            await session.commit()
    samples = await scrape(api)
    assert value(samples, "opscenter_jobs_queued", kind=kind) is None


@pytest.fixture
def source_db() -> Iterator[str]:
    name = f"oc_src_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{name}"')
    psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", name
    )
    yield name
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_ended_jobs_and_backed_up_bytes(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    r = await admin.post(
        "/api/v1/servers",
        json={
            "name": uid("pg-"),
            "type": "postgresql",
            "host": "127.0.0.1",
            "port": 5432,
            "credentials": {"username": "postgres"},
        },
    )
    assert r.status_code == 201, r.text
    server_id = r.json()["id"]
    runner = api.app.state.ctx.runner

    async def backup(database: str) -> tuple[str, str]:
        accepted = await admin.post(
            "/api/v1/backups", json={"server_id": server_id, "database_name": database}
        )
        assert accepted.status_code == 202, accepted.text
        job = await runner.wait(accepted.json()["job_id"], limit_seconds=120)
        return str(accepted.json()["id"]), job.status

    def durations(samples: Samples, outcome: str) -> tuple[float, float]:
        labels = {"kind": "backup", "outcome": outcome}
        count = value(samples, "opscenter_job_duration_seconds_count", **labels) or 0.0
        total = value(samples, "opscenter_job_duration_seconds_sum", **labels) or 0.0
        return count, total

    before = await scrape(api)
    backup_id, status = await backup(source_db)
    assert status == "succeeded"
    size = (await admin.get(f"/api/v1/backups/{backup_id}")).json()["size_bytes"]
    after = await scrape(api)
    count, total = durations(after, "succeeded")
    count_before, total_before = durations(before, "succeeded")
    assert count == count_before + 1 and total > total_before
    bytes_before = value(before, "opscenter_backup_bytes_total") or 0.0
    assert size > 0 and value(after, "opscenter_backup_bytes_total") == bytes_before + size

    # A failed backup is timed under its outcome and stores nothing.
    _, status = await backup(uid("oc_missing_"))
    assert status == "failed"
    failed = await scrape(api)
    assert durations(failed, "failed")[0] == durations(after, "failed")[0] + 1
    assert value(failed, "opscenter_backup_bytes_total") == value(
        after, "opscenter_backup_bytes_total"
    )


async def test_a_process_without_the_api_serves_metrics_on_its_own_port(tmp_path: Path) -> None:
    port = unused_port()
    ctx = build_context(make_settings(tmp_path, OPSCENTER_METRICS_PORT=port))
    url = f"http://127.0.0.1:{port}/metrics"
    async with running(ctx), httpx.AsyncClient() as c:  # as `opscenter worker` runs
        r = await c.get(url)
        assert r.status_code == 200, r.text
        assert "opscenter_job_duration_seconds" in r.text
        assert "opscenter_backup_bytes_total" in r.text
    async with httpx.AsyncClient() as c:
        with pytest.raises(httpx.ConnectError):  # and stops with it
            await c.get(url)
