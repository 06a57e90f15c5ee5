"""Delivery of events to integrations.

A listener turns each event from the bus into one `webhook_deliveries` row per matching
active integration (in the database, so a restart loses nothing); a sender sends due
rows. A failed attempt is retried after the published schedule, by default
5 s, 30 s, 2 min, 10 min, 1 h (`OPSCENTER_INTEGRATION_RETRY_SCHEDULE`); after the last
one the delivery is `failed` and can be redelivered. After
`OPSCENTER_INTEGRATION_DISABLE_AFTER` failed attempts in a row (default 20) the
integration is disabled and an `integration.disabled` event (severity error) is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import isoformat_z, utcnow
from opscenter.core.context import AppContext
from opscenter.core.db import release
from opscenter.core.events import Event
from opscenter.core.logging import get_logger
from opscenter.core.security import Keyring
from opscenter.integrations import service
from opscenter.integrations.providers import PROVIDERS, Message, matches
from opscenter.integrations.transport import DeliveryError, OutboundClient, redact
from opscenter.models import Backup, Integration, WebhookDelivery

log = get_logger("opscenter.integrations")
IDLE_POLL_SECONDS = 1.0  # other processes (and API routes) queue deliveries too
BATCH = 20


@dataclass
class AttemptResult:
    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None


async def send_message(http: OutboundClient, type_: str, message: Message) -> AttemptResult:
    """One attempt; the error text is cut short and cleaned of the integration's secrets."""
    secrets = [*message.credentials.values(), message.signing_secret or ""]
    started = time.perf_counter()
    try:
        sent = await PROVIDERS[type_].send(http, message)
    except DeliveryError as err:
        error = ("permanent: " if err.permanent else "") + redact(err.message, secrets)
        return AttemptResult(False, err.status_code, _ms_since(started), error)
    except Exception as err:  # a provider bug must not kill the sender
        error = redact(f"{type(err).__name__}: {err}", secrets)[:300]
        return AttemptResult(False, None, _ms_since(started), error)
    return AttemptResult(True, sent.status_code, _ms_since(started), None)


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


class DeliveryWorker:
    def __init__(self, ctx: AppContext, *, send: bool = True) -> None:
        self.ctx = ctx
        self.send = send
        self.http = OutboundClient(ctx.outbound, ctx.settings.integration_timeout_seconds)
        self._stack = AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._in_flight: set[int] = set()

    async def start(self) -> None:
        """Subscribe now (no event published after start is missed); send only in a
        long-lived process: a CLI command queues, the server sends."""
        queue = await self._stack.enter_async_context(self.ctx.events.subscribe())
        self._tasks.append(asyncio.create_task(self._listen(queue)))
        if self.send:
            await self._release_stale()
            self._tasks.append(asyncio.create_task(self._send_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._in_flight:  # cut off mid-send: back to the queue, sent again after restart
            async with self.ctx.db.write_session() as session:
                await session.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id.in_(self._in_flight),
                        WebhookDelivery.status == "sending",
                    )
                    .values(status="pending")
                )
                await session.commit()
            self._in_flight.clear()
        await self._stack.aclose()
        await self.http.close()

    # -- queueing --------------------------------------------------------------------------
    async def _listen(self, queue: asyncio.Queue[Event]) -> None:
        while True:
            event = await queue.get()
            try:
                await self.enqueue(event)
            except Exception:
                log.exception("integration enqueue failed", event_type=event.type)

    async def enqueue(self, event: Event) -> int:
        """One pending delivery per active integration subscribed to the event."""
        if event.type == "integration.test":
            return 0
        async with self.ctx.db.read_session() as session:
            rows = (
                await session.execute(
                    select(Integration.id, Integration.events).where(Integration.is_active)
                )
            ).all()
        targets = [row.id for row in rows if matches(list(row.events), event.type)]
        if not targets:
            return 0
        data = await self._enriched(event.data)
        payload = {"type": event.type, "timestamp": event.timestamp, "data": data}
        async with self.ctx.db.write_session() as session:
            for integration_id in targets:
                session.add(
                    service.new_delivery(integration_id, event.type, payload, event.team_id)
                )
            await session.commit()
        self._wake.set()
        return len(targets)

    async def _enriched(self, data: dict[str, Any]) -> dict[str, Any]:
        """Backup events name only the backup; alerts are about its target (server and
        database), so that is added."""
        backup_id = data.get("backup_id")
        if not isinstance(backup_id, int) or "server_id" in data:
            return data
        async with self.ctx.db.read_session() as session:
            backup = await session.get(Backup, backup_id)
        if backup is None:
            return data
        return {
            **data,
            "server_id": backup.server_id,
            "database_name": backup.database_name,
            "schedule_id": backup.schedule_id,
        }

    # -- sending ---------------------------------------------------------------------------
    async def _release_stale(self) -> None:
        """Rows left `sending` by a process that died mid-request go back to the queue."""
        cutoff = utcnow() - timedelta(seconds=self.ctx.settings.integration_timeout_seconds + 30)
        async with self.ctx.db.write_session() as session:
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.status == "sending", WebhookDelivery.updated_at < cutoff)
                .values(status="pending", next_attempt_at=utcnow())
            )
            await session.commit()

    async def _send_forever(self) -> None:
        last_release = time.monotonic()
        while True:
            try:
                sent = await self.send_due()
                if time.monotonic() - last_release > 60:
                    await self._release_stale()
                    last_release = time.monotonic()
                wait = 0.0 if sent else await self._seconds_to_next_due()
            except Exception:
                log.exception("integration sender error")
                wait = IDLE_POLL_SECONDS
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def _seconds_to_next_due(self) -> float:
        async with self.ctx.db.read_session() as session:
            due = await session.scalar(
                select(func.min(WebhookDelivery.next_attempt_at)).where(
                    WebhookDelivery.status == "pending"
                )
            )
        if due is None:
            return IDLE_POLL_SECONDS
        return max(0.0, min(IDLE_POLL_SECONDS, (due - utcnow()).total_seconds()))

    async def send_due(self) -> int:
        """Claim and send the due deliveries: one integration's in order, integrations
        side by side. Returns how many were attempted."""
        async with self.ctx.db.read_session() as session:
            due = (
                await session.execute(
                    select(WebhookDelivery.id, WebhookDelivery.integration_id)
                    .where(
                        WebhookDelivery.status == "pending",
                        WebhookDelivery.next_attempt_at <= utcnow(),
                    )
                    .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                    .limit(BATCH)
                )
            ).all()
        by_integration: dict[int, list[int]] = {}
        for row in due:
            by_integration.setdefault(row.integration_id, []).append(row.id)

        async def run(ids: list[int]) -> int:
            done = 0
            for delivery_id in ids:
                if await self._claim(delivery_id):
                    self._in_flight.add(delivery_id)
                    try:
                        await self.attempt(delivery_id)
                    finally:
                        self._in_flight.discard(delivery_id)
                    done += 1
            return done

        results = await asyncio.gather(*(run(ids) for ids in by_integration.values()))
        return sum(results)

    async def _claim(self, delivery_id: int) -> bool:
        """Atomically, so two processes never send the same attempt."""
        async with self.ctx.db.write_session() as session:
            result = await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending")
                .values(status="sending", updated_at=utcnow())
            )
            await session.commit()
        return int(getattr(result, "rowcount", 0) or 0) == 1

    async def attempt(self, delivery_id: int) -> None:
        keyring = self.ctx.keyring
        async with self.ctx.db.read_session() as session:
            delivery = await session.get(WebhookDelivery, delivery_id)
            integration = (
                await session.get(Integration, delivery.integration_id) if delivery else None
            )
        if delivery is None or integration is None:
            return
        if not integration.is_active:
            await self._finish(delivery_id, None, give_up="the integration is disabled")
            return
        message = service.message_for(keyring, integration, delivery)
        result = await send_message(self.http, integration.type, message)
        await self._finish(delivery_id, result, state=message.state)

    async def _finish(
        self,
        delivery_id: int,
        result: AttemptResult | None,
        *,
        state: dict[str, Any] | None = None,
        give_up: str | None = None,
    ) -> None:
        schedule = self.ctx.settings.integration_retry_schedule
        threshold = self.ctx.settings.integration_disable_after
        disabled: Event | None = None
        now = utcnow()
        async with self.ctx.db.write_session() as session:
            delivery = await session.get(WebhookDelivery, delivery_id)
            if delivery is None:
                return
            integration = await session.get(Integration, delivery.integration_id)
            if integration is None:
                return
            if result is None:  # not attempted
                delivery.status = "failed"
                delivery.last_error = give_up
                delivery.next_attempt_at = None
                await session.commit()
                return
            delivery.attempts += 1
            delivery.last_status_code = result.status_code
            delivery.last_error = result.error
            delivery.last_latency_ms = result.latency_ms
            delivery.attempts_log = [
                *delivery.attempts_log,
                {
                    "attempt": len(delivery.attempts_log) + 1,
                    "at": isoformat_z(now),
                    "ok": result.ok,
                    "status_code": result.status_code,
                    "latency_ms": result.latency_ms,
                    "error": result.error,
                },
            ]
            if result.ok:
                delivery.status = "succeeded"
                delivery.delivered_at = now
                delivery.next_attempt_at = None
                integration.consecutive_failures = 0
                integration.last_success_at = now
                if state is not None and state != integration.state:
                    integration.state = state
            else:
                permanent = (result.error or "").startswith("permanent: ")
                if permanent or delivery.attempts > len(schedule):
                    delivery.status = "failed"
                    delivery.next_attempt_at = None
                else:
                    delivery.status = "pending"
                    delivery.next_attempt_at = now + timedelta(
                        seconds=schedule[delivery.attempts - 1]
                    )
                integration.consecutive_failures += 1
                integration.last_failure_at = now
                if integration.is_active and integration.consecutive_failures >= threshold:
                    integration.is_active = False
                    integration.disabled_reason = (
                        f"disabled after {integration.consecutive_failures} failed attempts "
                        f"in a row; last error: {result.error}"
                    )[:500]
                    disabled = Event(
                        "integration.disabled",
                        {
                            "integration_id": integration.id,
                            "name": integration.name,
                            "integration_type": integration.type,
                            "consecutive_failures": integration.consecutive_failures,
                            "last_error": result.error,
                            "severity": "error",
                        },
                    )
            await session.commit()
            log.info(
                "integration delivery attempt",
                integration_id=integration.id,
                delivery_id=delivery.id,
                event_type=delivery.event_type,
                attempt=delivery.attempts,
                ok=result.ok,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                error=result.error,
                delivery_status=delivery.status,
            )
        if disabled is not None:
            log.warning("integration disabled", integration_id=disabled.data["integration_id"])
            self.ctx.events.publish(disabled)


async def probe(
    session: AsyncSession, keyring: Keyring, http: OutboundClient, integration_id: int
) -> tuple[WebhookDelivery, AttemptResult]:
    """`POST /integrations/{id}/test`: one real request now, logged as a delivery. It is
    not retried and does not count toward disabling the integration."""
    integration = await service.get_integration(session, integration_id)
    payload = {
        "type": "integration.test",
        "timestamp": isoformat_z(utcnow()),
        "data": {"integration_id": integration.id, "message": "Test from opscenter"},
    }
    delivery = service.new_delivery(integration.id, "integration.test", payload, None)
    message = service.message_for(keyring, integration, delivery)
    await release(session)
    result = await send_message(http, integration.type, message)
    await service.get_integration(session, integration_id)  # still there after the wait
    now = utcnow()
    delivery.attempts = 1
    delivery.status = "succeeded" if result.ok else "failed"
    delivery.next_attempt_at = None
    delivery.delivered_at = now if result.ok else None
    delivery.last_status_code = result.status_code
    delivery.last_error = result.error
    delivery.last_latency_ms = result.latency_ms
    delivery.attempts_log = [
        {
            "attempt": 1,
            "at": isoformat_z(now),
            "ok": result.ok,
            "status_code": result.status_code,
            "latency_ms": result.latency_ms,
            "error": result.error,
        }
    ]
    session.add(delivery)
    await session.flush()
    return delivery, result
