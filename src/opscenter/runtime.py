"""Assembling the running system: one context for the API server and the CLI alike."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from opscenter.bootstrap import BootstrapResult, bootstrap
from opscenter.config import Settings
from opscenter.core.background import Background
from opscenter.core.cache import TtlCache
from opscenter.core.context import AppContext
from opscenter.core.db import Database
from opscenter.core.event_relay import relay_for
from opscenter.core.events import EventBus
from opscenter.core.outbound import OutboundPolicy
from opscenter.core.ratelimit import RateLimiter
from opscenter.core.registry import BackgroundService
from opscenter.core.security import Keyring
from opscenter.domains import registry
from opscenter.jobs.engine import DistributedRunner
from opscenter.jobs.runner import JobRunner
from opscenter.storage.service import StoragePool

#: The collector's first threshold while running. At Python's 700, the objects of the
#: requests in flight (not garbage: they go when their request ends) set it off: 32 list
#: requests at once ran a collection every 6 requests, 6 % of their CPU. At 10,000 that is
#: about one in 3,000 requests, and cyclic garbage still goes within 10,000 objects.
YOUNG_OBJECTS = 10_000


def build_context(settings: Settings) -> AppContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keyring = Keyring.load_or_create(settings.keys_dir, settings.jwt_secret)
    db = Database(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout,
    )
    events = EventBus()
    ctx = AppContext(
        settings=settings,
        db=db,
        keyring=keyring,
        limiter=RateLimiter(settings.redis_url, enabled=settings.rate_limit_enabled),
        events=events,
        runner=_runner(settings, db, events),
        outbound=OutboundPolicy(settings.outbound_allowlist),
        storages=StoragePool(keyring),
        principals=TtlCache(settings.auth_cache_seconds),
    )
    for wire in registry().wirings:
        wire(ctx)
    return ctx


def _runner(settings: Settings, db: Database, events: EventBus) -> JobRunner:
    if settings.job_engine == "procrastinate":
        return DistributedRunner(
            db,
            events,
            database_url=settings.effective_database_url,
            concurrency=settings.job_concurrency,
            heartbeat_seconds=settings.job_heartbeat_seconds,
            shutdown_grace_seconds=settings.job_shutdown_grace_seconds,
            take_jobs=settings.run_jobs,
        )
    return JobRunner(
        db,
        events,
        concurrency=settings.job_concurrency,
        heartbeat_seconds=settings.job_heartbeat_seconds,
    )


@asynccontextmanager
async def running(ctx: AppContext, *, scheduler: bool = False) -> AsyncIterator[BootstrapResult]:
    """Migrate and seed, start the job runner and the domains' background services (for
    the server, `scheduler=True`, its long-lived loops too: the scheduler, health checks);
    stop them and close the database after."""
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
    services = registry().background_services
    listeners = _made(ctx, scheduler, [s for s in services if s.outlives_jobs])
    loops = _made(ctx, scheduler, [s for s in services if not s.outlives_jobs])
    for service in (*listeners, *loops):
        await service.start()
    # What is alive now (modules, the app, its routes and models) lives as long as the
    # process: out of the collector's sight, or every full collection walks all of it, a
    # pause of 60-80 ms in whatever request or job is running then.
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS, *thresholds[1:])
    try:
        yield result
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        for service in reversed(loops):
            await service.stop()
        await ctx.runner.stop()
        for service in reversed(listeners):
            await service.stop()
        if relay is not None:
            await relay.stop()
        await ctx.storages.close()
        await ctx.db.dispose()


def _made(ctx: AppContext, server: bool, services: list[BackgroundService]) -> list[Background]:
    made = (service.make(ctx, server) for service in services)
    return [service for service in made if service is not None]
