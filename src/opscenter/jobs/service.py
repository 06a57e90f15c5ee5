"""Jobs: created in the request's transaction, submitted to the runner after commit."""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import utcnow
from opscenter.core.principal import Principal
from opscenter.core.scoping import get_readable, readable
from opscenter.models import Job, JobStatus


class JobFields(TypedDict):
    kind: str
    team_id: int
    lock_key: str | None
    resource_type: str
    resource_id: int
    params: dict[str, Any]


def new_job(principal: Principal, **fields: Unpack[JobFields]) -> Job:
    """A queued job's row, not yet added (callers that add many flush them together)."""
    return Job(**fields, created_by=principal.user_id or None)  # the CLI acts as user 0


async def create_job(
    session: AsyncSession, principal: Principal, **fields: Unpack[JobFields]
) -> Job:
    job = new_job(principal, **fields)
    session.add(job)
    await session.flush()
    return job


async def holding(session: AsyncSession, lock_key: str) -> Job | None:
    """The queued or running job that holds ``lock_key`` (works on that target), if any."""
    return await session.scalar(
        select(Job)
        .where(Job.lock_key == lock_key, Job.status.in_(("queued", "running")))
        .order_by(Job.id)
        .limit(1)
    )


def jobs_query(principal: Principal) -> Select[Job]:
    return readable(select(Job), Job, principal).order_by(Job.id.desc())


def filter_jobs(stmt: Select[Job], *, kind: str | None, status: str | None) -> Select[Job]:
    if kind:
        stmt = stmt.where(Job.kind == kind)
    if status:
        stmt = stmt.where(Job.status == status)
    return stmt


async def get_job(session: AsyncSession, principal: Principal, job_id: int) -> Job:
    return await get_readable(session, Job, job_id, principal, name="Job")


def request_cancel(job: Job) -> None:
    """Mark a job for cancellation in the caller's transaction. A queued job ends at once;
    a running one is stopped by the runner once this commits (`JobRunner.signal_cancel`)."""
    job.cancel_requested = True
    if job.status == JobStatus.QUEUED:
        job.status = "cancelled"
        job.error_code = "cancelled"
        job.error_message = "cancelled before it started"
        job.finished_at = utcnow()
