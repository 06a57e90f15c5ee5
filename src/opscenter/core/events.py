"""In-process event bus. Services publish after commit; subscribers (the WebSocket
layer, notifications) each get a bounded queue, so one slow reader never blocks others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from opscenter.core.clock import isoformat_z, utcnow


@dataclass(frozen=True)
class Event:
    type: str  # e.g. "backup.progress", "server.health_changed"
    data: dict[str, Any]
    team_id: int | None = None
    timestamp: str = field(default_factory=lambda: isoformat_z(utcnow()))


class EventBus:
    def __init__(self, queue_size: int = 1000) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()
        self._queue_size = queue_size
        self._overflowed: set[int] = set()
        self.dropped = 0

    def publish(self, event: Event) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1  # the subscriber is too slow; it loses this event
                self._overflowed.add(id(queue))

    def overflowed(self, queue: asyncio.Queue[Event]) -> bool:
        """Whether this subscriber has lost events for being too slow."""
        return id(queue) in self._overflowed

    @asynccontextmanager
    async def subscribe(self, queue_size: int | None = None) -> AsyncIterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(queue_size or self._queue_size)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)
            self._overflowed.discard(id(queue))
