"""Events cross processes through Redis pub/sub or PostgreSQL LISTEN/NOTIFY: two buses,
each with its relay, stand for two server processes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from opscenter.config import Settings
from opscenter.core.event_relay import EventRelay, PostgresRelay, RedisRelay, relay_for
from opscenter.core.events import Event, EventBus
from opscenter.core.metrics import REGISTRY
from tests.core.helpers import fresh_database

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def pg_dsn(tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", tmp_path) as url:
        yield url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(params=["redis", "postgres"])
def make_relay(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], EventRelay]:
    if request.param == "redis":
        return lambda: RedisRelay(REDIS_URL)
    dsn = request.getfixturevalue("pg_dsn")
    return lambda: PostgresRelay(dsn)


@contextlib.asynccontextmanager
async def process(make: Callable[[], EventRelay]) -> AsyncIterator[tuple[EventBus, EventRelay]]:
    bus = EventBus()
    relay = make()
    await relay.start(bus)
    try:
        await asyncio.wait_for(relay.listening.wait(), 10)
        yield bus, relay
    finally:
        await relay.stop()


async def next_event(queue: asyncio.Queue[Event], seconds: float = 5) -> Event:
    return await asyncio.wait_for(queue.get(), seconds)


async def nothing_in(queue: asyncio.Queue[Event], seconds: float = 0.5) -> None:
    await asyncio.sleep(seconds)
    assert queue.empty(), queue.get_nowait()


async def test_event_reaches_the_other_process_once(make_relay: Callable[[], EventRelay]) -> None:
    tag = uuid.uuid4().hex
    async with (
        process(make_relay) as (bus_a, _),
        process(make_relay) as (bus_b, relay_b),
        bus_a.subscribe(include_remote=True) as a_all,
        bus_b.subscribe(include_remote=True) as b_all,
        bus_b.subscribe() as b_local,
    ):
        event = Event("server.health_changed", {"server_id": 7, "tag": tag}, team_id=3)
        bus_a.publish(event)

        got = await next_event(b_all)
        assert (got.type, got.data, got.team_id, got.timestamp) == (
            event.type,
            event.data,
            event.team_id,
            event.timestamp,
        )
        assert relay_b.received == 1
        # Process A saw it once, locally: its own echo is skipped.
        assert (await next_event(a_all)).data["tag"] == tag
        await nothing_in(a_all)
        # Side-effect subscribers (notifications, webhooks) see their own process only.
        await nothing_in(b_local, 0)


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_the_receiver_measures_the_relay_lag(make_relay: Callable[[], EventRelay]) -> None:
    async with (
        process(make_relay) as (bus_a, relay_a),
        process(make_relay) as (bus_b, relay_b),
        bus_b.subscribe(include_remote=True) as b_all,
    ):
        assert await relay_a.check() and await relay_b.check()
        count = sample("opscenter_event_relay_lag_seconds_count")
        total = sample("opscenter_event_relay_lag_seconds_sum")
        bus_a.publish(Event("server.health_changed", {"server_id": 1}))
        started = asyncio.get_running_loop().time()
        await next_event(b_all)
        waited = asyncio.get_running_loop().time() - started
        # Process B observed this event's lag (and any other process's on the channel).
        observed = sample("opscenter_event_relay_lag_seconds_count") - count
        assert observed >= 1
        assert (
            0 <= sample("opscenter_event_relay_lag_seconds_sum") - total <= observed * (waited + 1)
        )
        # A message from a sender that does not say when it sent is delivered, unmeasured.
        legacy = b'{"origin":"x","type":"t","data":{},"team_id":null,"timestamp":"z"}'
        relay_b._receive(legacy)
        assert (await next_event(b_all)).type == "t"


async def test_listener_comes_back_after_its_connection_is_killed(
    make_relay: Callable[[], EventRelay], pg_dsn: str
) -> None:
    async with (
        process(make_relay) as (bus_a, _),
        process(make_relay) as (bus_b, relay_b),
        bus_b.subscribe(include_remote=True) as b_all,
    ):
        relay_b.listening.clear()
        if isinstance(relay_b, RedisRelay):
            redis = Redis.from_url(REDIS_URL)
            await redis.client_kill_filter(_type="pubsub")
            await redis.aclose()
        else:
            conn = await asyncpg.connect(pg_dsn)
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
            )
            await conn.close()
        await asyncio.wait_for(relay_b.listening.wait(), 15)
        # Re-subscribed: events flow again.
        bus_a.publish(Event("backup.completed", {"backup_id": 1}))
        assert (await next_event(b_all, 10)).type == "backup.completed"


async def test_postgres_keeps_an_oversized_event_local(pg_dsn: str) -> None:
    make = lambda: PostgresRelay(pg_dsn)  # noqa: E731
    async with (
        process(make) as (bus_a, _),
        process(make) as (bus_b, _),
        bus_a.subscribe() as a_local,
        bus_b.subscribe(include_remote=True) as b_all,
    ):
        bus_a.publish(Event("backup.failed", {"error": "x" * 10_000}))
        bus_a.publish(Event("backup.failed", {"error": "short"}))
        assert (await next_event(b_all)).data == {"error": "short"}
        assert (await next_event(a_local)).data["error"] == "x" * 10_000


async def test_publish_never_blocks_when_the_transport_is_down() -> None:
    bus = EventBus()
    relay = RedisRelay("redis://127.0.0.1:1/0")  # nothing listens there
    dropped = sample("opscenter_event_relay_dropped_events_total")
    await relay.start(bus)
    try:
        async with bus.subscribe() as local:
            for i in range(1500):
                bus.publish(Event("backup.progress", {"i": i}))
            assert local.qsize() == 1000 and bus.dropped == 500  # the local queue's own bound
            assert relay.dropped >= 500  # the outbox keeps the newest
            assert sample("opscenter_event_relay_dropped_events_total") - dropped == relay.dropped
            assert not await relay.check()  # and /health says so
    finally:
        await relay.stop()


def test_settings_refuse_a_relay_without_its_transport(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="OPSCENTER_REDIS_URL"):
        Settings(data_dir=tmp_path, event_bus="redis", redis_url=None)
    with pytest.raises(ValueError, match="PostgreSQL DATABASE_URL"):
        Settings(data_dir=tmp_path, event_bus="postgres", database_url=None)
    assert relay_for("memory", redis_url=None, database_url="sqlite+aiosqlite:///x") is None
