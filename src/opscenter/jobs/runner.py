"""The in-process job runner (embedded mode): bounded concurrency, one job per target
lock at a time, heartbeats, cancellation, and reconciliation at start-up.

The `jobs` table is the truth; the runner only carries "run job N" to a coroutine.
`jobs.engine.DistributedRunner` carries it through procrastinate instead and reuses
`execute` and `interrupt`, so a job runs the same way in either mode.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from opscenter.core.clock import utcnow
from opscenter.core.db import Database
from opscenter.core.events import Event, EventBus
from opscenter.core.logging import get_logger
from opscenter.core.metrics import observe_job_end
from opscenter.models import Job, JobStatus

log = get_logger("opscenter.jobs")
HEARTBEAT_SECONDS = 10.0
# How soon a running job notices a cancel asked for in another process.
CANCEL_POLL_SECONDS = 1.0
# The phase of a running job that a process has claimed to settle as interrupted.
INTERRUPTING = "interrupting"
PROGRESS_WRITE_SECONDS = 1.0
TERMINAL = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED}
)


class JobFailed(Exception):
    """A handler's classified failure: the job ends `failed` with this code and message."""

    def __init__(self, code: str, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.result = result or {}


@dataclass
class JobContext:
    """What a handler gets: its job, and a way to report progress."""

    job_id: int
    kind: str
    team_id: int
    params: dict[str, Any]
    runner: JobRunner
    #: What the job acts on, named in its events as `<type>_id` (e.g. `backup_id`).
    subject: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)  # made as the job starts
    _last_write: float = 0.0
    _pending: dict[str, Any] = field(default_factory=dict)

    async def progress(
        self,
        *,
        phase: str | None = None,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        percent: float | None = None,
    ) -> None:
        values: dict[str, Any] = {}
        if phase is not None:
            values["phase"] = phase
        if bytes_done is not None:
            values["bytes_done"] = bytes_done
        if bytes_total is not None:
            values["bytes_total"] = bytes_total
        if percent is not None:
            values["progress"] = round(max(0.0, min(100.0, percent)), 1)
        self._pending.update(values)
        now = asyncio.get_running_loop().time()
        if phase is not None or now - self._last_write >= PROGRESS_WRITE_SECONDS:
            self._last_write = now
            await self.runner.write(self.job_id, **self._pending)
            self.runner.publish(self, "job.progress", dict(self._pending))
            self._pending.clear()


@dataclass(frozen=True)
class EngineStatus:
    """What /health says of the job engine."""

    engine: str  # "embedded" (in-process) or "procrastinate" (scale-out)
    ok: bool
    workers: int  # live processes taking jobs
    error: str | None = None


Handler = Callable[[JobContext], Coroutine[Any, Any, dict[str, Any]]]
Finalizer = Callable[[JobContext, str, str | None, str | None], Awaitable[None]]
# Queues a fresh attempt of an interrupted job (its id), or None when there is nothing to redo.
Retrier = Callable[[JobContext], Awaitable[int | None]]
#: Attempts of one piece of work that a lost process may cost before it stays interrupted.
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class JobKind:
    run: Handler
    # Called once the job ended, whatever the outcome: (ctx, status, error_code, message).
    finish: Finalizer | None = None
    # Kinds that are safe to redo after a lost process give one (backups: a new backup row).
    retry: Retrier | None = None


def _context(job: Job, runner: JobRunner) -> JobContext:
    subject = {}
    if job.resource_type and job.resource_id is not None:
        subject[f"{job.resource_type}_id"] = job.resource_id
    return JobContext(job.id, job.kind, job.team_id, job.params, runner, subject)


class JobRunner:
    #: Whether a cancel may be asked in another process (the running job must look for it);
    #: in one process `signal_cancel` stops the job itself.
    cancels_elsewhere = False

    def __init__(
        self,
        db: Database,
        events: EventBus,
        *,
        concurrency: int = 2,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.db = db
        self.events = events
        self.concurrency = concurrency
        self.heartbeat_seconds = heartbeat_seconds
        self.kinds: dict[str, JobKind] = {}
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._running: dict[int, asyncio.Task[dict[str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def register(
        self,
        kind: str,
        run: Handler,
        finish: Finalizer | None = None,
        retry: Retrier | None = None,
    ) -> None:
        self.kinds[kind] = JobKind(run, finish, retry)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self.reconcile()
        self._workers = [
            asyncio.create_task(self._work(), name=f"job-worker-{i}")
            for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        for task in self._running.values():
            task.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, *self._running.values(), return_exceptions=True)
        self._workers.clear()

    async def reconcile(self) -> None:
        """Jobs that were running when the last process died are `interrupted` (their
        finishers clean up); queued ones are taken up again."""
        async with self.db.read_session() as session:
            stale = (
                await session.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING))
            ).all()
            queued = (
                await session.scalars(
                    select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.id)
                )
            ).all()
        for job_id in stale:
            await self.interrupt(job_id, "opscenter stopped while this job was running")
        for job_id in queued:
            self.submit(job_id)

    @property
    def watch_seconds(self) -> float:
        """How often a running job's watch reads its row: each beat, or each second where
        a cancel or a lost-job claim may come from another process."""
        if self.cancels_elsewhere:
            return min(CANCEL_POLL_SECONDS, self.heartbeat_seconds)
        return self.heartbeat_seconds

    # -- API ---------------------------------------------------------------------------------
    async def engine_status(self) -> EngineStatus:
        return EngineStatus("embedded", ok=True, workers=1 if self._workers else 0)

    def submit(self, job_id: int) -> None:
        """Call after the transaction that created the job committed."""
        self._queue.put_nowait(job_id)

    async def signal_cancel(self, job_id: int) -> None:
        """After a transaction marked the job `cancel_requested` (see jobs.service): stop it
        if it runs here; if it was still queued (now `cancelled`), run its finisher."""
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()
            return
        async with self.db.read_session() as session:
            job = await session.get(Job, job_id)
        if job is not None and job.status == "cancelled" and job.started_at is None:
            await self._finish(job_id, "cancelled", "cancelled", job.error_message)

    async def wait(self, job_id: int, limit_seconds: float = 300) -> Job:
        """Poll until the job ends (tests and the CLI)."""
        deadline = asyncio.get_running_loop().time() + limit_seconds
        while True:
            async with self.db.read_session() as session:
                job = await session.get(Job, job_id)
            if job is not None and job.status in TERMINAL:
                return job
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status if job else 'missing'}")
            await asyncio.sleep(0.1)

    async def write(self, job_id: int, **values: Any) -> None:
        async with self.db.write_session() as session:
            await session.execute(update(Job).where(Job.id == job_id).values(**values))
            await session.commit()

    def publish(self, ctx: JobContext, type_: str, data: dict[str, Any]) -> None:
        self.events.publish(
            Event(
                type_,
                {"job_id": ctx.job_id, "kind": ctx.kind, **ctx.subject, **data},
                team_id=ctx.team_id,
            )
        )

    # -- internals -------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self._run_one(job_id)
            except Exception:
                log.exception("job runner error", job_id=job_id)

    async def _claim(self, job_id: int) -> Job | None:
        async with self.db.write_session() as session:
            now = utcnow()
            claimed = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                .values(
                    status="running",
                    worker=self.worker_id,
                    started_at=now,
                    heartbeat_at=now,
                    phase="starting",
                )
            )
            await session.commit()
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return await session.get(Job, job_id)

    async def _run_one(self, job_id: int) -> None:
        async with self.db.read_session() as session:
            job = await session.get(Job, job_id)
        if job is None or job.status != JobStatus.QUEUED:
            return
        lock = self._locks.setdefault(job.lock_key or f"job:{job_id}", asyncio.Lock())
        async with lock:  # one job per target: later ones wait here, still `queued`
            await self.execute(job_id)

    async def execute(self, job_id: int) -> None:
        """Claim a queued job and run it to its end. Raises CancelledError, leaving the job
        `running`, when this process itself is stopping (`interrupt` settles it then)."""
        claimed = await self._claim(job_id)
        if claimed is None:
            return  # ended (cancelled) or taken elsewhere meanwhile
        kind = self.kinds.get(claimed.kind)
        ctx = _context(claimed, self)
        if kind is None:
            await self._end(ctx, "failed", "unknown_kind", f"no handler for '{claimed.kind}'")
            return
        self.publish(ctx, "job.started", {"status": "running"})
        task = asyncio.create_task(kind.run(ctx))
        watch = asyncio.create_task(self._watch(job_id, task))
        self._running[job_id] = task
        try:
            result = await task
        except asyncio.CancelledError:
            if asyncio.current_task() and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the process is stopping
            if watch.done() and not watch.cancelled() and watch.result() == "lost":
                return  # another process found it silent and settled it
            await self._end(ctx, "cancelled", "cancelled", "cancelled by request")
        except JobFailed as failed:
            await self._end(ctx, "failed", failed.code, failed.message, failed.result)
        except Exception as exc:
            log.exception("job crashed", job_id=job_id, kind=claimed.kind)
            await self._end(
                ctx,
                "failed",
                "internal_error",
                f"unexpected error ({type(exc).__name__}); see the server log",
            )
        else:
            await self._end(ctx, JobStatus.SUCCEEDED, None, None, result)
        finally:
            self._running.pop(job_id, None)
            watch.cancel()

    async def interrupt(
        self, job_id: int, message: str, *, silent_since: datetime | None = None
    ) -> bool:
        """Settle a job whose process was lost or stopped mid-run: `interrupted`, its finisher
        cleans up, and a kind that is safe to redo queues a fresh attempt. Processes may race
        to a silent job (`silent_since`: its last heartbeat is older): one claims it, and if
        that one dies too, the claim goes silent and is taken again. Returns whether this
        caller settled it."""
        claim = [Job.id == job_id, Job.status == JobStatus.RUNNING]
        if silent_since is not None:
            claim.append(Job.heartbeat_at < silent_since)
        async with self.db.write_session() as session:
            job = await session.scalar(
                update(Job)
                .where(*claim)
                .values(
                    phase=INTERRUPTING,
                    heartbeat_at=utcnow(),
                    error_code="interrupted",
                    error_message=message,  # the finisher may add what it found
                )
                .returning(Job)
            )
            await session.commit()
        if job is None:
            return False
        log.warning("job interrupted", job_id=job_id, kind=job.kind, reason=message)
        ctx = _context(job, self)
        # The finisher first, as in `_end`: whoever sees the job end finds its work settled.
        await self._run_finisher(ctx, JobStatus.INTERRUPTED, "interrupted", message)
        await self.write(
            job_id, status=JobStatus.INTERRUPTED, phase=JobStatus.INTERRUPTED, finished_at=utcnow()
        )
        self._publish_end(ctx, JobStatus.INTERRUPTED, "interrupted", message)
        kind = self.kinds.get(job.kind)
        if kind and kind.retry and int(job.params.get("attempt", 1)) < MAX_ATTEMPTS:
            try:
                retry_id = await kind.retry(ctx)
            except Exception:
                log.exception("could not queue a retry", job_id=job_id)
            else:
                if retry_id is not None:
                    log.info("interrupted job retried", job_id=job_id, retry_job_id=retry_id)
                    self.submit(retry_id)
        return True

    async def _watch(self, job_id: int, task: asyncio.Task[Any]) -> str:
        """Beat the job's heartbeat while it runs, and stop it when a cancel was asked for
        (from any process) or another process settled it as lost ("lost")."""
        beat = self.heartbeat_seconds
        last_beat = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.watch_seconds)
            try:
                async with self.db.read_session() as session:
                    row = (
                        await session.execute(
                            select(Job.status, Job.phase, Job.cancel_requested).where(
                                Job.id == job_id
                            )
                        )
                    ).one_or_none()
                if row is None or row.status != JobStatus.RUNNING or row.phase == INTERRUPTING:
                    task.cancel()
                    return "lost"
                if row.cancel_requested:
                    task.cancel()
                    return "cancelled"
                now = asyncio.get_running_loop().time()
                if now - last_beat >= beat:
                    last_beat = now
                    await self.write(job_id, heartbeat_at=utcnow())
            except Exception:  # a database blip: the job goes on, the next beat retries
                log.warning("job heartbeat failed", job_id=job_id, exc_info=True)

    async def _end(
        self,
        ctx: JobContext,
        status: str,
        code: str | None,
        message: str | None,
        result: dict[str, Any] | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": status,
            "error_code": code,
            "error_message": message,
            "finished_at": utcnow(),
            "phase": status,
        }
        if status == JobStatus.SUCCEEDED:
            values["progress"] = 100.0
        if result is not None:
            values["result"] = result
        # The finisher first: whoever sees the job end (polling GET /jobs/{id}) then finds
        # what it worked on, such as the backup row, already settled.
        await self._run_finisher(ctx, status, code, message)
        async with self.db.write_session() as session:
            await session.execute(
                update(Job)
                .where(
                    Job.id == ctx.job_id,
                    Job.status == JobStatus.RUNNING,
                    Job.phase.is_distinct_from(INTERRUPTING),  # another process settles it
                )
                .values(**values)
            )
            await session.commit()
        observe_job_end(ctx.kind, status, ctx.started)
        self._publish_end(ctx, status, code, message)

    async def _finish(
        self, job_id: int, status: str, code: str | None, message: str | None
    ) -> None:
        """The finisher of a job that ended without running (cancelled while queued)."""
        async with self.db.read_session() as session:
            job = await session.get(Job, job_id)
        if job is None:
            return
        ctx = _context(job, self)
        await self._run_finisher(ctx, status, code, message)
        self._publish_end(ctx, status, code, message)

    async def _run_finisher(
        self, ctx: JobContext, status: str, code: str | None, message: str | None
    ) -> None:
        kind = self.kinds.get(ctx.kind)
        if kind and kind.finish:
            try:
                await kind.finish(ctx, status, code, message)
            except Exception:
                log.exception("job finisher failed", job_id=ctx.job_id)

    def _publish_end(
        self, ctx: JobContext, status: str, code: str | None, message: str | None
    ) -> None:
        self.publish(
            ctx, f"job.{status}", {"status": status, "error_code": code, "error_message": message}
        )
