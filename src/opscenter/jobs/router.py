"""Jobs: every long action's status, progress and outcome; cancel."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.errors import Conflict, NotFound, responses
from opscenter.core.middleware import defer
from opscenter.core.pagination import CursorPaging, KeysetPage, PathId, keyset_page
from opscenter.core.principal import Principal
from opscenter.jobs import service
from opscenter.jobs.runner import TERMINAL
from opscenter.jobs.schemas import JobOut
from opscenter.models import Job

router = APIRouter(prefix="/jobs", tags=["Jobs"])
ReadJobs = Annotated[Principal, Depends(require("read:jobs"))]
WriteJobs = Annotated[Principal, Depends(require("write:jobs"))]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]


@router.get("", response_model=KeysetPage[JobOut])
async def list_jobs(
    principal: ReadJobs,
    session: SessionDep,
    paging: CursorPaging,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    status: JobStatus | None = None,
) -> KeysetPage[JobOut]:
    stmt = service.filter_jobs(service.jobs_query(principal), kind=kind, status=status)
    rows, total, next_cursor = await keyset_page(session, stmt, paging, Job.id)
    return KeysetPage.keyset([JobOut.model_validate(j) for j in rows], total, paging, next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=responses(NotFound))
async def get_job(job_id: PathId, principal: ReadJobs, session: SessionDep) -> JobOut:
    return JobOut.model_validate(await service.get_job(session, principal, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, responses=responses(NotFound, Conflict))
async def cancel_job(
    job_id: PathId, principal: WriteJobs, session: SessionDep, ctx: Ctx, request: Request
) -> JobOut:
    """Stops a queued or running job: its process group is killed, partial output removed."""
    job = await service.get_job(session, principal, job_id)
    if job.status in TERMINAL:
        raise Conflict(f"Job {job_id} already ended ({job.status})")
    service.request_cancel(job)
    defer(request.state, lambda: ctx.runner.signal_cancel(job_id))
    await audit.record(
        session,
        action="job.cancel",
        actor=principal,
        resource_type="job",
        resource_id=job_id,
        details={"kind": job.kind},
        origin=origin_of(request),
    )
    await session.flush()
    return JobOut.model_validate(job)
