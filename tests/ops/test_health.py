"""/health as a load balancer and an operator read it: every check named, 503 when the
process cannot serve (database, task engine, rate-limit store), 200 `degraded` when it
serves without something (the event bus to the other processes, live workers)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api
from tests.core.helpers import no_stack_trace, own_app
from tests.helpers import psql
from tests.ops.helpers import unused_port

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def closed_port() -> int:
    return unused_port()


async def get_health(api: Api) -> tuple[int, dict[str, Any]]:
    async with api.client() as c:
        r = await c.get("/health")
    assert no_stack_trace(r.text)
    body: dict[str, Any] = r.json()
    return r.status_code, body


async def test_health_names_every_check_and_the_job_engine(api: Api) -> None:
    status, body = await get_health(api)
    assert status == 200 and body["status"] == "healthy", body
    assert body["checks"] == {
        "database": True,
        "event_bus": True,  # in-process: nothing to reach
        "task_engine": True,
        "workers": True,
    }
    assert body["errors"] == {}
    assert body["jobs"] == {"engine": "embedded", "workers": 1}  # this process runs them


async def test_a_database_gone_while_serving_is_a_503(tmp_path: Path) -> None:
    async with own_app("postgres", tmp_path, OPSCENTER_EVENT_BUS="postgres") as api:
        relay = api.app.state.ctx.events.relay
        await asyncio.wait_for(relay.listening.wait(), 10)
        status, body = await get_health(api)
        assert status == 200 and body["checks"]["event_bus"] is True, body

        name = api.settings.effective_database_url.rsplit("/", 1)[1]
        psql(f'DROP DATABASE "{name}" WITH (FORCE)')
        status, body = await get_health(api)
        assert status == 503 and body["status"] == "unhealthy", body
        assert body["checks"]["database"] is False and body["errors"]["database"]
        assert name not in str(body["errors"])  # the failure's kind, not the driver's words
        # The relay listens on that database: its check follows once the loss is seen.
        for _ in range(50):
            if not body["checks"]["event_bus"]:
                break
            await asyncio.sleep(0.1)
            status, body = await get_health(api)
        assert body["checks"]["event_bus"] is False, body
        assert body["errors"]["event_bus"] == "not connected"


async def test_redis_event_bus_is_checked(tmp_path: Path) -> None:
    settings = {"OPSCENTER_EVENT_BUS": "redis", "REDIS_URL": REDIS_URL}
    async with own_app("sqlite", tmp_path, OPSCENTER_RATE_LIMIT_ENABLED=True, **settings) as api:
        await asyncio.wait_for(api.app.state.ctx.events.relay.listening.wait(), 10)
        status, body = await get_health(api)
    assert status == 200 and body["status"] == "healthy", body
    assert body["checks"]["event_bus"] is True and body["checks"]["redis"] is True


async def test_event_bus_down_degrades_but_serves(tmp_path: Path, closed_port: int) -> None:
    # Rate limits off: Redis carries only the events, so the API still serves without it.
    url = f"redis://127.0.0.1:{closed_port}/0"
    async with own_app("sqlite", tmp_path, OPSCENTER_EVENT_BUS="redis", REDIS_URL=url) as api:
        status, body = await get_health(api)
    assert status == 200 and body["status"] == "degraded", body
    assert body["checks"]["event_bus"] is False and body["checks"]["database"] is True
    assert body["errors"] == {"event_bus": "not connected"}
    assert "redis" not in body["checks"]


async def test_redis_down_with_rate_limits_on_is_a_503(tmp_path: Path, closed_port: int) -> None:
    # Every API request counts against the limits there: without Redis none can be served.
    url = f"redis://127.0.0.1:{closed_port}/0"
    async with own_app(
        "sqlite",
        tmp_path,
        OPSCENTER_EVENT_BUS="redis",
        REDIS_URL=url,
        OPSCENTER_RATE_LIMIT_ENABLED=True,
    ) as api:
        status, body = await get_health(api)
    assert status == 503 and body["status"] == "unhealthy", body
    assert body["checks"]["redis"] is False and body["checks"]["event_bus"] is False
    assert body["errors"]["redis"] and str(closed_port) not in str(body["errors"])


async def test_no_live_worker_degrades(tmp_path: Path) -> None:
    async with own_app("sqlite", tmp_path) as api:
        await api.app.state.ctx.runner.stop()  # no process takes jobs any more
        status, body = await get_health(api)
    assert status == 200 and body["status"] == "degraded", body
    assert body["checks"]["workers"] is False and body["checks"]["task_engine"] is True
    assert body["jobs"] == {"engine": "embedded", "workers": 0}
    assert body["errors"] == {"workers": "no live worker takes jobs"}


async def test_the_distributed_engine_reports_its_workers_and_a_loss_is_a_503(
    tmp_path: Path,
) -> None:
    async with own_app(
        "postgres", tmp_path, OPSCENTER_JOB_ENGINE="procrastinate", OPSCENTER_RUN_JOBS="false"
    ) as api:
        runner = api.app.state.ctx.runner
        status, body = await get_health(api)
        # API-only, and no worker anywhere yet: it serves, and says nobody takes jobs.
        assert status == 200 and body["status"] == "degraded", body
        assert body["jobs"] == {"engine": "procrastinate", "workers": 0}
        assert body["checks"]["task_engine"] is True and body["checks"]["workers"] is False

        # A worker registers in the engine (what `opscenter worker` does when it starts).
        worker = await runner.app.job_manager.register_worker()
        status, body = await get_health(api)
        assert status == 200 and body["jobs"] == {"engine": "procrastinate", "workers": 1}
        await runner.app.job_manager.unregister_worker(worker)

        await runner.app.close_async()  # the engine's connections are gone
        status, body = await get_health(api)
        assert status == 503 and body["checks"]["task_engine"] is False, body
        assert body["errors"]["task_engine"] and "postgres" not in body["errors"]["task_engine"]
        await runner.app.open_async()  # for a clean stop
