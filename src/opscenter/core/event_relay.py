"""Carries events between server processes, so a WebSocket client connected to one
process sees what happens in another (several uvicorn workers, several hosts).

Two transports, chosen by ``OPSCENTER_EVENT_BUS``: Redis pub/sub (``redis``, at
``OPSCENTER_REDIS_URL``) or PostgreSQL LISTEN/NOTIFY (``postgres``, on the metadata
database itself, nothing more to run). Both are fire-and-forget, like the in-process
bus: a process that is down or reconnecting misses events, and clients re-read state
over the REST API on reconnect. Publishing never blocks the caller: events go through
a bounded queue to a sender task; when the transport is down the queue overflows and
the oldest events are the ones lost, counted in ``dropped``.

Each message carries the time it was handed to the relay (``sent``), so the receiving
process measures the relay's lag (``opscenter_event_relay_lag_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from opscenter.core.events import Event, EventBus
from opscenter.core.logging import get_logger
from opscenter.core.metrics import RELAY_DROPPED, RELAY_LAG

log = get_logger("opscenter.events")

CHANNEL = "opscenter_events"
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
PG_PAYLOAD_LIMIT = 7900
_RETRY_SECONDS = (0.5, 1, 2, 5, 10)


def encode(event: Event, origin: str, sent: float) -> str:
    return json.dumps(
        {
            "origin": origin,
            "sent": sent,
            "type": event.type,
            "data": event.data,
            "team_id": event.team_id,
            "timestamp": event.timestamp,
        },
        default=str,
        separators=(",", ":"),
    )


def decode(payload: str | bytes) -> tuple[str, float | None, Event]:
    """The sender's origin, when it sent (epoch seconds, if it said), and the event."""
    raw = json.loads(payload)
    sent = raw.get("sent")
    team_id = raw.get("team_id")
    event = Event(
        type=str(raw["type"]),
        data=dict(raw["data"]),
        team_id=int(team_id) if team_id is not None else None,
        timestamp=str(raw["timestamp"]),
    )
    return str(raw["origin"]), float(sent) if sent is not None else None, event


class EventRelay(ABC):
    """Attach to a bus with ``start``: local events go out, other processes' come in."""

    def __init__(self, queue_size: int = 1000) -> None:
        self.origin = uuid.uuid4().hex  # our own events come back; we skip them
        self._outbox: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self._bus: EventBus | None = None
        self.dropped = 0
        self.received = 0
        #: Set once the listener is subscribed (tests wait for it).
        self.listening = asyncio.Event()

    # -- transport ------------------------------------------------------------------------
    @abstractmethod
    async def _publish(self, payload: str) -> None: ...

    @abstractmethod
    def _listen(self) -> contextlib.AbstractAsyncContextManager[AsyncIterator[str | bytes]]:
        """Subscribe; the iterator yields payloads until the connection fails."""

    @abstractmethod
    async def _close(self) -> None:
        """Release what the transport holds."""

    # -- the bus side ---------------------------------------------------------------------
    def send(self, event: Event) -> None:
        payload = encode(event, self.origin, time.time())
        while True:
            try:
                self._outbox.put_nowait(payload)
                return
            except asyncio.QueueFull:
                self._outbox.get_nowait()  # the transport is behind: lose the oldest
                self.dropped += 1
                RELAY_DROPPED.inc()

    async def check(self) -> bool:
        """Whether events flow now: the listener is subscribed (a failed connection ends
        its subscription until it is back)."""
        return self.listening.is_set()

    async def start(self, bus: EventBus) -> None:
        self._bus = bus
        bus.relay = self
        self._tasks = [
            asyncio.create_task(self._sender(), name="event-relay-send"),
            asyncio.create_task(self._listener(), name="event-relay-listen"),
        ]

    async def stop(self) -> None:
        if self._bus is not None and self._bus.relay is self:
            self._bus.relay = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._close()

    async def _sender(self) -> None:
        failures = 0
        while True:
            payload = await self._outbox.get()
            while True:
                try:
                    await self._publish(payload)
                    failures = 0
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
                    failures += 1
                    log.warning("event relay: publish failed", error=str(exc), retry_in=delay)
                    await asyncio.sleep(delay)

    async def _listener(self) -> None:
        failures = 0
        while True:
            try:
                async with self._listen() as payloads:
                    self.listening.set()
                    failures = 0
                    async for payload in payloads:
                        self._receive(payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                delay = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("event relay: listener lost", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)

    def _receive(self, payload: str | bytes) -> None:
        try:
            origin, sent, event = decode(payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("event relay: unreadable message ignored", error=str(exc))
            return
        if origin == self.origin or self._bus is None:
            return
        self.received += 1
        if sent is not None:
            RELAY_LAG.observe(max(0.0, time.time() - sent))
        self._bus.deliver_remote(event)


class RedisRelay(EventRelay):
    def __init__(self, url: str) -> None:
        super().__init__()
        from redis.asyncio import Redis

        self._redis: Redis = Redis.from_url(url)

    async def _publish(self, payload: str) -> None:
        await self._redis.publish(CHANNEL, payload)

    async def check(self) -> bool:
        # The subscriber notices a silent server only when it next reads; a ping asks now.
        return await super().check() and bool(await self._redis.ping())

    @contextlib.asynccontextmanager
    async def _listen(self) -> AsyncIterator[AsyncIterator[str | bytes]]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(CHANNEL)

        async def payloads() -> AsyncIterator[str | bytes]:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"]

        try:
            yield payloads()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _close(self) -> None:
        await self._redis.aclose()


class PostgresRelay(EventRelay):
    """LISTEN on one dedicated connection, NOTIFY on another (asyncpg, no pool: the
    relay's traffic is small and must not compete with requests for connections)."""

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self._dsn = dsn
        self._notifier: Any = None

    async def _connect(self) -> Any:
        import asyncpg

        return await asyncpg.connect(self._dsn, timeout=10)

    async def _publish(self, payload: str) -> None:
        if len(payload.encode()) > PG_PAYLOAD_LIMIT:
            log.warning("event relay: event too large for NOTIFY, kept local", size=len(payload))
            return
        if self._notifier is None or self._notifier.is_closed():
            self._notifier = await self._connect()
        try:
            await self._notifier.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        except Exception:
            with contextlib.suppress(Exception):
                await self._notifier.close()
            self._notifier = None
            raise

    @contextlib.asynccontextmanager
    async def _listen(self) -> AsyncIterator[AsyncIterator[str | bytes]]:
        conn = await self._connect()
        inbox: asyncio.Queue[str | None] = asyncio.Queue()

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            inbox.put_nowait(payload)

        conn.add_termination_listener(lambda _conn: inbox.put_nowait(None))
        await conn.add_listener(CHANNEL, on_notify)

        async def payloads() -> AsyncIterator[str | bytes]:
            while (payload := await inbox.get()) is not None:
                yield payload
            raise ConnectionError("the LISTEN connection was closed")

        try:
            yield payloads()
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _close(self) -> None:
        if self._notifier is not None:
            with contextlib.suppress(Exception):
                await self._notifier.close(timeout=2)
            self._notifier = None


def relay_for(kind: str, *, redis_url: str | None, database_url: str) -> EventRelay | None:
    """The relay the settings ask for (validated there), or None for in-process only."""
    if kind == "redis":
        assert redis_url is not None
        return RedisRelay(redis_url)
    if kind == "postgres":
        return PostgresRelay(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    return None
