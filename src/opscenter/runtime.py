"""Assembling the running system: one context for the API server and the CLI alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from opscenter.bootstrap import BootstrapResult, bootstrap
from opscenter.config import Settings
from opscenter.core.context import AppContext
from opscenter.core.db import Database
from opscenter.core.event_relay import relay_for
from opscenter.core.events import EventBus
from opscenter.core.outbound import OutboundPolicy
from opscenter.core.ratelimit import RateLimiter
from opscenter.core.security import Keyring
from opscenter.domains import registry
from opscenter.integrations.delivery import DeliveryWorker
from opscenter.jobs.runner import JobRunner
from opscenter.notifications.dispatch import NotificationDispatcher
from opscenter.schedules.scheduler import Scheduler
from opscenter.storage.service import StoragePool


def build_context(settings: Settings) -> AppContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keyring = Keyring.load_or_create(settings.keys_dir, settings.jwt_secret)
    db = Database(settings.effective_database_url)
    events = EventBus()
    ctx = AppContext(
        settings=settings,
        db=db,
        keyring=keyring,
        limiter=RateLimiter(settings.redis_url, enabled=settings.rate_limit_enabled),
        events=events,
        runner=JobRunner(db, events, concurrency=settings.job_concurrency),
        outbound=OutboundPolicy(settings.outbound_allowlist),
        storages=StoragePool(keyring),
    )
    for wire in registry().wirings:
        wire(ctx)
    return ctx


@asynccontextmanager
async def running(ctx: AppContext, *, scheduler: bool = False) -> AsyncIterator[BootstrapResult]:
    """Migrate and seed, start the job runner (and, for the server, the scheduler loop);
    stop them and close the database after. CLI commands leave the scheduler off: a
    short-lived process must not claim slots whose jobs it would not live to run."""
    result = await bootstrap(ctx.settings, ctx.db)
    settings = ctx.settings
    relay = relay_for(
        settings.event_bus,
        redis_url=settings.redis_url,
        database_url=settings.effective_database_url,
    )
    if relay is not None:
        await relay.start(ctx.events)
    await ctx.runner.start()
    # Alerts from this process's own events (a CLI backup that fails alerts too).
    notifier = NotificationDispatcher(ctx)
    await notifier.start()
    # Events become queued deliveries in every process; only the server sends them.
    deliveries = DeliveryWorker(ctx)
    await deliveries.start(send=scheduler)
    loop = Scheduler(ctx)
    if scheduler:
        loop.start()
    try:
        yield result
    finally:
        await loop.stop()
        await deliveries.stop()
        await ctx.runner.stop()
        await notifier.stop()
        if relay is not None:
            await relay.stop()
        await ctx.storages.close()
        await ctx.db.dispose()
