"""Scale-out jobs on procrastinate (PostgreSQL): any number of processes take jobs.

The `jobs` table stays the truth (status, progress, result); procrastinate only carries
"run job N" to one worker, holds one job per target at a time (its `lock`), and knows
which workers are alive (their heartbeats). Running a job is `JobRunner.execute`, the
same code as in embedded mode.

Every process with this engine also sweeps, every heartbeat:
- a job whose worker stopped beating (killed, frozen, cut off) is `interrupted`: its
  finisher removes what it left half-written, a kind that is safe to redo is queued again,
  and the engine's job is failed so that its lock frees the target;
- a `queued` job that the engine does not carry (the hand-over after commit was lost) is
  handed over again.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import procrastinate
from procrastinate import exceptions as engine_errors
from procrastinate.jobs import Status
from sqlalchemy import String, column, exists, func, select, table, text

from opscenter.core.clock import utcnow
from opscenter.core.db import AdvisoryLock, Database, advisory_xact_lock
from opscenter.core.events import EventBus
from opscenter.core.logging import get_logger
from opscenter.jobs.runner import EngineStatus, JobRunner
from opscenter.models import Job, JobStatus

log = get_logger("opscenter.jobs")
QUEUE = "jobs"
TASK = "opscenter.run_job"
#: Beats a job or a worker may miss before it counts as lost.
MISSED_BEATS = 3
PRUNE_SECONDS = 3600.0
KEEP_ENDED_HOURS = 24
_ENGINE_JOBS = table("procrastinate_jobs", column("queueing_lock"), column("status"))


def libpq_url(database_url: str) -> str:
    """psycopg's connection string from SQLAlchemy's async URL."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


class DistributedRunner(JobRunner):
    cancels_elsewhere = True

    def __init__(
        self,
        db: Database,
        events: EventBus,
        *,
        database_url: str,
        concurrency: int = 2,
        heartbeat_seconds: float = 10.0,
        shutdown_grace_seconds: float = 60.0,
        take_jobs: bool = True,
    ) -> None:
        super().__init__(db, events, concurrency=concurrency, heartbeat_seconds=heartbeat_seconds)
        self.take_jobs = take_jobs
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=libpq_url(database_url),
                # the worker's listener, its fetches and the sweeps; jobs use SQLAlchemy's pool
                min_size=1,
                max_size=4,
            )
        )
        self.app.task(name=TASK, queue=QUEUE)(self._run_task)
        self._worker: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._handovers: set[asyncio.Task[None]] = set()
        self._pruned_at = float("-inf")

    @property
    def lost_after(self) -> float:
        return self.heartbeat_seconds * MISSED_BEATS

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self.app.open_async()
        await self._ensure_schema()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="job-sweeper")
        if self.take_jobs:
            self._worker = asyncio.create_task(
                self.app.run_worker_async(
                    queues=[QUEUE],
                    name=self.worker_id,
                    concurrency=self.concurrency,
                    install_signal_handlers=False,
                    shutdown_graceful_timeout=self.shutdown_grace_seconds,
                    update_heartbeat_interval=self.heartbeat_seconds,
                    stalled_worker_timeout=self.lost_after,
                    delete_jobs="successful",
                ),
                name="job-worker",
            )

    async def stop(self) -> None:
        """Graceful: running jobs get the grace period to finish; past it they are handed
        back (`interrupted`, retried when safe); then the worker leaves the engine."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        await asyncio.gather(*self._handovers, return_exceptions=True)
        await self.app.close_async()

    async def _ensure_schema(self) -> None:
        async with self.db.write_session() as session:
            await advisory_xact_lock(session, AdvisoryLock.JOB_QUEUE_SCHEMA)
            present = await session.scalar(text("SELECT to_regclass('procrastinate_jobs')"))
            if present is None:
                # The engine's own schema, once, through the same lock-holding transaction.
                schema = self.app.schema_manager.get_schema()
                raw = await session.connection()
                driver = await raw.get_raw_connection()
                await driver.driver_connection.execute(schema)  # type: ignore[union-attr]
                log.info("created the job engine's tables")
            await session.commit()

    # -- API ---------------------------------------------------------------------------------
    def submit(self, job_id: int) -> None:
        """Hand the job to the engine (after the transaction that created it committed).
        A hand-over that fails is redone by the next sweep: the job stays `queued`."""
        task = asyncio.create_task(self._hand_over(job_id))
        self._handovers.add(task)
        task.add_done_callback(self._handovers.discard)

    async def engine_status(self) -> EngineStatus:
        try:
            async with asyncio.timeout(5):
                row = await self.app.connector.execute_query_one_async(
                    "SELECT count(*) AS live FROM procrastinate_workers "
                    "WHERE last_heartbeat > now() - make_interval(secs => %(seconds)s)",
                    seconds=self.lost_after,
                )
        except Exception as exc:
            return EngineStatus("procrastinate", ok=False, workers=0, error=type(exc).__name__)
        return EngineStatus("procrastinate", ok=True, workers=int(row["live"]))

    # -- internals -------------------------------------------------------------------------
    async def _hand_over(self, job_id: int) -> None:
        try:
            async with self.db.read_session() as session:
                lock_key = await session.scalar(select(Job.lock_key).where(Job.id == job_id))
            await self.app.configure_task(
                TASK,
                lock=lock_key or f"job:{job_id}",
                queueing_lock=f"job:{job_id}",
            ).defer_async(job_id=job_id)
        except engine_errors.AlreadyEnqueued:
            pass  # the engine carries it already
        except Exception:
            log.warning("job hand-over failed; the sweep retries", job_id=job_id, exc_info=True)

    async def _run_task(self, job_id: int) -> None:
        try:
            await self.execute(job_id)
        except asyncio.CancelledError:
            # The worker is stopping and the grace period is over: hand the job back.
            await self.interrupt(job_id, "the worker stopped (shutdown) while this job ran")
            raise

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self.sweep()
            except Exception:
                log.warning("job sweep failed", exc_info=True)

    async def sweep(self) -> None:
        """Settle the jobs of lost processes, free the targets they held in the engine,
        and re-hand the queued jobs the engine lost."""
        cutoff = utcnow() - timedelta(seconds=self.lost_after)
        async with self.db.read_session() as session:
            silent = (
                await session.scalars(
                    select(Job.id).where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)
                )
            ).all()
            carried = exists().where(
                _ENGINE_JOBS.c.queueing_lock == func.concat("job:", Job.id),
                _ENGINE_JOBS.c.status.cast(String).in_(("todo", "doing")),
            )
            unqueued = (
                await session.scalars(
                    select(Job.id)
                    .where(
                        Job.status == JobStatus.QUEUED,
                        Job.created_at < utcnow() - timedelta(seconds=self.heartbeat_seconds),
                        ~carried,
                    )
                    .order_by(Job.id)
                    .limit(500)
                )
            ).all()
        for job_id in silent:
            await self.interrupt(
                job_id,
                f"the worker running it stopped answering (no heartbeat for {self.lost_after:g} s)",
                silent_since=cutoff,
            )
        # The engine's side: a lost worker's job still holds its lock. Freed once our row
        # ended; a worker in its shutdown grace stops beating the engine, not the job.
        stalled = await self.app.job_manager.get_stalled_jobs(
            queue=QUEUE, task_name=TASK, seconds_since_heartbeat=self.lost_after
        )
        owners = {job.id: job.task_kwargs.get("job_id") for job in stalled}
        still_running: set[int] = set()
        if owners:  # one query for them all; none in the usual sweep
            async with self.db.read_session() as session:
                still_running = set(
                    (
                        await session.scalars(
                            select(Job.id).where(
                                Job.id.in_([o for o in owners.values() if isinstance(o, int)]),
                                Job.status == JobStatus.RUNNING,
                            )
                        )
                    ).all()
                )
        for engine_job in stalled:
            if owners[engine_job.id] in still_running:
                continue
            assert engine_job.id is not None
            with contextlib.suppress(Exception):  # another sweeper finished it first
                await self.app.job_manager.finish_job_by_id_async(
                    engine_job.id, status=Status.FAILED, delete_job=False
                )
        for job_id in unqueued:
            await self._hand_over(job_id)
        now = asyncio.get_running_loop().time()
        if now - self._pruned_at > PRUNE_SECONDS:
            # The engine's own rows of ended jobs; our `jobs` table keeps the story.
            self._pruned_at = now
            await self.app.job_manager.delete_old_jobs(
                nb_hours=KEEP_ENDED_HOURS,
                queue=QUEUE,
                include_failed=True,
                include_cancelled=True,
                include_aborted=True,
            )
