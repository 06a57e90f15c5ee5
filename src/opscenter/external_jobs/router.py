"""External job reports: seed 000's legacy `POST /api/backup/status` (no version prefix)
and `/api/v1/external-jobs` to manage the jobs those reports build."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.clock import utcnow
from opscenter.core.context import SessionDep, publish_after_commit
from opscenter.core.errors import Conflict, InvalidInput, NotFound, responses
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.external_jobs import service
from opscenter.external_jobs.schemas import (
    ExternalJobCreate,
    ExternalJobDetail,
    ExternalJobOut,
    ExternalJobUpdate,
    ReportAccepted,
    ReportIn,
    ReportOut,
)

router = APIRouter(prefix="/external-jobs", tags=["External jobs"])
legacy_router = APIRouter(prefix="/api/backup", tags=["External jobs"])
# Reports are backup results: a key needs write:backups to send them, read:backups to see.
ReadJobs = Annotated[Principal, Depends(require("read:backups"))]
WriteJobs = Annotated[Principal, Depends(require("write:backups"))]


async def _report(
    body: ReportIn, principal: Principal, session: SessionDep, request: Request
) -> ReportAccepted:
    now = utcnow()
    recorded = await service.record_report(session, principal, body, now)
    job = recorded.job
    await audit.record(
        session,
        action="external_job.report",
        actor=principal,
        resource_type="external_job",
        resource_id=job.id,
        details={
            "job_name": job.name,
            "host": job.host,
            "status": body.status,
            "report_id": recorded.report.id,
            "created_job": recorded.created_job,
        },
        origin=origin_of(request),
    )
    if recorded.recovered is not None:
        publish_after_commit(request, recorded.recovered)
    return ReportAccepted(
        report=service.report_out(recorded.report),
        job=service.job_out(job, now),
        created_job=recorded.created_job,
        recovered=recorded.recovered is not None,
    )


@legacy_router.post(
    "/status",
    response_model=ReportAccepted,
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidInput),
)
async def report_legacy(
    body: ReportIn, principal: WriteJobs, session: SessionDep, request: Request
) -> ReportAccepted:
    """Seed 000's path for backup scripts (send `X-API-Key`). The first report of a
    `job_name` + `host` creates the job, expecting a report every 24 h with 1 h grace."""
    return await _report(body, principal, session, request)


@router.post(
    "/reports",
    response_model=ReportAccepted,
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidInput),
)
async def report(
    body: ReportIn, principal: WriteJobs, session: SessionDep, request: Request
) -> ReportAccepted:
    """The same as `POST /api/backup/status`, under the versioned API."""
    return await _report(body, principal, session, request)


@router.get("", response_model=Page[ExternalJobOut])
async def list_jobs(
    principal: ReadJobs,
    session: SessionDep,
    paging: Paging,
    enabled: bool | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[ExternalJobOut]:
    stmt = service.filter_jobs(service.jobs_query(principal), enabled=enabled, q=q)
    rows, total = await paginate(session, stmt, paging)
    now = utcnow()
    return Page.of([service.job_out(j, now) for j in rows], total, paging)


@router.post(
    "",
    response_model=ExternalJobOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def create_job(
    body: ExternalJobCreate, principal: WriteJobs, session: SessionDep, request: Request
) -> ExternalJobOut:
    """Register a job before its first report, so that silence from the start is noticed."""
    job = await service.create_job(session, principal, body)
    await audit.record(
        session,
        action="external_job.create",
        actor=principal,
        resource_type="external_job",
        resource_id=job.id,
        details=body.model_dump(mode="json"),
        origin=origin_of(request),
    )
    return service.job_out(job, utcnow())


@router.get("/{job_id}", response_model=ExternalJobDetail, responses=responses(NotFound))
async def get_job(job_id: PathId, principal: ReadJobs, session: SessionDep) -> ExternalJobDetail:
    """The job with its newest reports."""
    job = await service.get_job(session, principal, job_id)
    reports = await service.recent_reports(session, job.id)
    return ExternalJobDetail(
        **service.job_out(job, utcnow()).model_dump(),
        recent_reports=[service.report_out(r) for r in reports],
    )


@router.get("/{job_id}/reports", response_model=Page[ReportOut], responses=responses(NotFound))
async def list_reports(
    job_id: PathId, principal: ReadJobs, session: SessionDep, paging: Paging
) -> Page[ReportOut]:
    """The job's whole report history, newest first."""
    job = await service.get_job(session, principal, job_id)
    rows, total = await paginate(session, service.reports_query(job.id), paging)
    return Page.of([service.report_out(r) for r in rows], total, paging)


@router.put("/{job_id}", response_model=ExternalJobOut, responses=responses(NotFound, InvalidInput))
async def update_job(
    job_id: PathId,
    body: ExternalJobUpdate,
    principal: WriteJobs,
    session: SessionDep,
    request: Request,
) -> ExternalJobOut:
    """Expected interval, grace and enabled; any change starts a new overdue period."""
    job, changed = await service.update_job(session, principal, job_id, body)
    await audit.record(
        session,
        action="external_job.update",
        actor=principal,
        resource_type="external_job",
        resource_id=job.id,
        details={"name": job.name, "host": job.host, "changed": changed},
        origin=origin_of(request),
    )
    return service.job_out(job, utcnow())


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(NotFound))
async def delete_job(
    job_id: PathId, principal: WriteJobs, session: SessionDep, request: Request
) -> None:
    """The job and its report history; a later report creates it afresh."""
    job = await service.delete_job(session, principal, job_id)
    await audit.record(
        session,
        action="external_job.delete",
        actor=principal,
        resource_type="external_job",
        resource_id=job_id,
        team_id=job.team_id,
        details={"name": job.name, "host": job.host},
        origin=origin_of(request),
    )
