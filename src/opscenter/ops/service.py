"""What /health and /metrics report: the health checks, run concurrently and each
bounded in time, and the job queue, read from the `jobs` table at scrape time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select, text

from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.logging import get_logger
from opscenter.core.metrics import JobCount, clear_job_queue, set_job_queue
from opscenter.jobs.runner import EngineStatus
from opscenter.models import Backup, Job, JobStatus

log = get_logger("opscenter.ops")
# A check that hangs (a stalled network, a database that accepts but never answers) is a
# failed check: a load balancer wants an answer within its own timeout, not in a minute.
CHECK_TIMEOUT_SECONDS = 5.0
# A scrape must not wait on a busy database: without a figure in time, the queue gauges
# are left out of that scrape.
QUEUE_TIMEOUT_SECONDS = 2.0
# Without these the process still serves its API, so it stays in the load balancer (200)
# and says what is missing: live updates from other processes, or anyone to run jobs.
# Any other failed check (database, task engine, rate-limit store) is a 503.
DEGRADING = frozenset({"event_bus", "workers"})


@dataclass
class Health:
    checks: dict[str, bool] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    engine: EngineStatus | None = None  # None when the engine did not answer

    @property
    def status(self) -> str:
        if not self.errors:
            return "healthy"
        return "degraded" if self.errors.keys() <= DEGRADING else "unhealthy"


async def health(ctx: AppContext) -> Health:
    result = Health()

    async def database() -> str | None:
        async with ctx.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return None

    async def rate_limit_store() -> str | None:
        return None if await ctx.limiter.check() else "unreachable"

    async def event_bus() -> str | None:
        relay = ctx.events.relay
        if relay is None:  # in-process only, nothing to reach; or the relay never started
            return None if ctx.settings.event_bus == "memory" else "not started"
        return None if await relay.check() else "not connected"

    async def task_engine() -> str | None:
        result.engine = await ctx.runner.engine_status()
        return None if result.engine.ok else result.engine.error or "unreachable"

    checks: dict[str, Callable[[], Awaitable[str | None]]] = {
        "database": database,
        "event_bus": event_bus,
        "task_engine": task_engine,
    }
    if ctx.settings.redis_url and ctx.settings.rate_limit_enabled:  # the counters live there
        checks["redis"] = rate_limit_store
    outcomes = await asyncio.gather(*(_bounded(check) for check in checks.values()))
    for name, error in zip(checks, outcomes, strict=True):
        result.checks[name] = error is None
        if error is not None:
            result.errors[name] = error
    if result.engine is not None and result.engine.ok:
        result.checks["workers"] = result.engine.workers > 0
        if not result.checks["workers"]:
            result.errors["workers"] = "no live worker takes jobs"
    return result


async def _bounded(check: Callable[[], Awaitable[str | None]]) -> str | None:
    """The check's error, or the name of what it raised (never its message: a driver's
    message can carry a connection string)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return await check()
    except Exception as exc:
        return type(exc).__name__


async def refresh_job_queue(ctx: AppContext) -> None:
    """Set the queue gauges from one grouped query on the jobs' (status, kind) index."""
    query = (
        select(Job.status, Job.kind, func.count(), func.min(Job.created_at))
        .where(Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
        .group_by(Job.status, Job.kind)
    )
    try:
        async with asyncio.timeout(QUEUE_TIMEOUT_SECONDS), ctx.db.read_session() as session:
            rows = (await session.execute(query)).all()
    except Exception as exc:
        log.warning("metrics: the job queue could not be read", error=type(exc).__name__)
        clear_job_queue()
        return
    set_job_queue([JobCount(*row) for row in rows], ctx.runner.kinds, utcnow())


async def backup_size(ctx: AppContext, backup_id: int) -> int:
    async with ctx.db.read_session() as session:
        size = await session.scalar(select(Backup.size_bytes).where(Backup.id == backup_id))
    return size or 0
