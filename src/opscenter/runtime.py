"""Assembling the running system: one context for the API server and the CLI alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from opscenter.backups.execute import BackupJobs
from opscenter.bootstrap import BootstrapResult, bootstrap
from opscenter.config import Settings
from opscenter.core.context import AppContext
from opscenter.core.db import Database
from opscenter.core.events import EventBus
from opscenter.core.outbound import OutboundPolicy
from opscenter.core.ratelimit import RateLimiter
from opscenter.core.security import Keyring
from opscenter.jobs.runner import JobRunner
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
    BackupJobs(ctx).register(ctx.runner)
    return ctx


@asynccontextmanager
async def running(ctx: AppContext, *, scheduler: bool = False) -> AsyncIterator[BootstrapResult]:
    """Migrate and seed, start the job runner (and, for the server, the scheduler loop);
    stop them and close the database after. CLI commands leave the scheduler off: a
    short-lived process must not claim slots whose jobs it would not live to run."""
    result = await bootstrap(ctx.settings, ctx.db)
    await ctx.runner.start()
    loop = Scheduler(ctx)
    if scheduler:
        loop.start()
    try:
        yield result
    finally:
        await loop.stop()
        await ctx.runner.stop()
        await ctx.storages.close()
        await ctx.db.dispose()
