"""Reports API (seed 004): list, generate (a job), versions, download of any version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import IntegrityError

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import Ctx, SessionDep, publish_after_commit
from opscenter.core.db import release
from opscenter.core.errors import Conflict, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.logging import get_logger
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.documents import media_type
from opscenter.jobs import service as jobs
from opscenter.jobs.accept import accepted
from opscenter.jobs.schemas import Accepted
from opscenter.models import StorageProvider
from opscenter.reports import service
from opscenter.reports.kinds import KINDS
from opscenter.reports.schemas import GenerateIn, KindOut, ReportOut, VersionOut

router = APIRouter(prefix="/reports", tags=["Reports"])
ReadReports = Annotated[Principal, Depends(require("read:reports"))]
WriteReports = Annotated[Principal, Depends(require("write:reports"))]
log = get_logger(__name__)


@router.get("", response_model=Page[ReportOut])
async def list_reports(
    principal: ReadReports,
    session: SessionDep,
    paging: Paging,
    kind: Annotated[str | None, Query(max_length=32)] = None,
) -> Page[ReportOut]:
    """The reports of the caller's teams, most recently generated first, with their
    latest version."""
    rows, total = await paginate(session, service.reports_query(principal, kind), paging)
    latest = await service.latest_versions(session, rows)
    return Page.of([service.report_out(r, latest.get(r.id)) for r in rows], total, paging)


@router.get("/kinds", response_model=Page[KindOut])
async def list_kinds(principal: ReadReports) -> Page[KindOut]:
    return Page.whole(
        [KindOut(name=k.name, title=k.title, description=k.description) for k in KINDS.values()]
    )


@router.post(
    "/generate",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(InvalidInput, NotFound, Conflict),
)
async def generate(
    body: GenerateIn, principal: WriteReports, session: SessionDep, request: Request
) -> Accepted:
    """Generate a report (a job): `kind`, `period` and `format` (pdf, csv or json). The same
    kind and period again adds a version to the same report; older versions stay
    downloadable."""
    team_id = service.team_for(principal, body.team_id)
    provider = await service.report_storage(session, team_id)
    try:
        report = await service.report_for(session, principal, body, team_id)
    except IntegrityError:
        raise Conflict("The same report is being created right now; try again") from None
    job = await jobs.create_job(
        session,
        principal,
        kind=service.JOB_KIND,
        team_id=team_id,
        lock_key=f"report:{report.id}",  # one generation of a report at a time
        resource_type="report",
        resource_id=report.id,
        params={
            "report_id": report.id,
            "format": body.format,
            "storage_id": provider.id,
            "storage_key": service.storage_key(report, body.format),
            "generated_by_id": principal.user_id or None,
            "generated_by": principal.username,
        },
    )
    await audit.record(
        session,
        action="report.generate",
        actor=principal,
        resource_type="report",
        resource_id=report.id,
        details={
            "kind": report.kind,
            "period": report.period,
            "format": body.format,
            "job_id": job.id,
        },
        origin=origin_of(request),
        team_id=team_id,
    )
    log.info(
        "report queued", report_id=report.id, kind=report.kind, period=report.period, job_id=job.id
    )
    publish_after_commit(
        request,
        Event(
            "reports.queued",
            {
                "report_id": report.id,
                "kind": report.kind,
                "period": report.period,
                "job_id": job.id,
            },
            team_id=team_id,
        ),
    )
    return accepted(
        request,
        job.id,
        report.id,
        f"Generating {KINDS[report.kind].title} for {report.period} as {body.format.upper()}",
        status="queued",
        status_url=f"/api/v1/jobs/{job.id}",
    )


@router.get("/{report_id}", response_model=ReportOut, responses=responses(NotFound))
async def get_report(report_id: PathId, principal: ReadReports, session: SessionDep) -> ReportOut:
    report = await service.get_report(session, principal, report_id)
    latest = await service.latest_versions(session, [report])
    return service.report_out(report, latest.get(report.id))


@router.get("/{report_id}/versions", response_model=Page[VersionOut], responses=responses(NotFound))
async def list_versions(
    report_id: PathId, principal: ReadReports, session: SessionDep, paging: Paging
) -> Page[VersionOut]:
    """Every version of the report, newest first; each one stays downloadable."""
    report = await service.get_report(session, principal, report_id)
    rows, total = await paginate(session, service.versions_query(report.id), paging)
    return Page.of([service.version_out(v) for v in rows], total, paging)


@router.get(
    "/{report_id}/download",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            }
        },
        **responses(NotFound),
    },
)
async def download(
    report_id: PathId,
    principal: ReadReports,
    session: SessionDep,
    ctx: Ctx,
    version: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="Default: the latest")
    ] = None,
) -> StreamingResponse:
    """The file of a version (the latest by default), checked against its SHA-256 as it is
    sent."""
    report = await service.get_report(session, principal, report_id)
    found = await service.get_version(session, report, version)
    provider = await session.get(StorageProvider, found.storage_id)
    if provider is None:
        raise NotFound("Report storage", found.storage_id)
    storage = ctx.storages.get(provider)
    name = service.file_name(report, found)
    await release(session)
    log.debug("report download", report_id=report.id, version=found.version)
    return StreamingResponse(
        service.stream_checked(storage, found.storage_key, found.sha256),
        media_type=media_type(found.format),
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Content-Length": str(found.size_bytes),
        },
    )
