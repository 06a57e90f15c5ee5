"""In-process event bus. Services publish after commit; subscribers (the WebSocket
layer, notifications) each get a bounded queue, so one slow reader never blocks others.
Domains that must act on another's event before it is over (retention and automatic
verification after `backup.completed`) register a reaction, which the publisher awaits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from opscenter.core.clock import isoformat_z, utcnow
from opscenter.core.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Event:
    type: str  # e.g. "backup.progress", "server.health_changed"
    data: dict[str, Any]
    team_id: int | None = None
    timestamp: str = field(default_factory=lambda: isoformat_z(utcnow()))


class EventBus:
    """Delivers each event to every subscriber in this process, and, with a relay
    attached (``core.event_relay``), to the subscribers of the other server processes
    that opted in with ``include_remote`` (the WebSocket layer). Subscribers with side
    effects (notifications, webhooks) see only their own process's events, so a
    cluster sends each message once."""

    def __init__(self, queue_size: int = 1000) -> None:
        # Each subscriber's queue, and whether it takes events from other processes.
        self._queues: dict[asyncio.Queue[Event], bool] = {}
        self._queue_size = queue_size
        self._overflowed: set[int] = set()
        self.dropped = 0
        self.relay: EventSink | None = None
        self._reactions: dict[str, list[Reaction]] = {}

    def react_to(self, type_: str, reaction: Reaction) -> None:
        """Have `reaction` run, in this process, for each event of this type passed to
        `react` (its publisher awaits it: what it queues is queued before the job ends)."""
        self._reactions.setdefault(type_, []).append(reaction)

    async def react(self, event: Event) -> None:
        """Run the reactions to `event` in the order they were registered; one that fails
        is logged and does not keep the others from running."""
        for reaction in self._reactions.get(event.type, ()):
            try:
                await reaction(event)
            except Exception:
                log.exception("event reaction failed", event_type=event.type)

    def publish(self, event: Event) -> None:
        self._deliver(event, remote=False)
        if self.relay is not None:
            self.relay.send(event)

    def deliver_remote(self, event: Event) -> None:
        """An event raised by another server process, brought by the relay."""
        self._deliver(event, remote=True)

    def _deliver(self, event: Event, *, remote: bool) -> None:
        for queue, include_remote in list(self._queues.items()):
            if remote and not include_remote:
                continue
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1  # the subscriber is too slow; it loses this event
                self._overflowed.add(id(queue))

    def overflowed(self, queue: asyncio.Queue[Event]) -> bool:
        """Whether this subscriber has lost events for being too slow."""
        return id(queue) in self._overflowed

    @asynccontextmanager
    async def subscribe(
        self, queue_size: int | None = None, *, include_remote: bool = False
    ) -> AsyncIterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(queue_size or self._queue_size)
        self._queues[queue] = include_remote
        try:
            yield queue
        finally:
            self._queues.pop(queue, None)
            self._overflowed.discard(id(queue))


Reaction = Callable[[Event], Awaitable[None]]


class EventSink(Protocol):
    """Where the bus hands every local event for the other processes; never blocks."""

    def send(self, event: Event) -> None: ...

    async def check(self) -> bool:
        """Whether events reach the other processes now (for /health)."""
        ...
