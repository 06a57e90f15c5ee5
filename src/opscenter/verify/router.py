"""Verification (seed 000): `/verify/...`; and seed 002's `/backup/recovery-tests`, the
restore tests among them. Both start `verify` jobs through the same service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from sqlalchemy import Select

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.errors import Conflict, InvalidInput, NotFound, responses
from opscenter.core.middleware import defer
from opscenter.core.pagination import Page, Paging, PathId, QueryId, paginate
from opscenter.core.principal import Principal
from opscenter.jobs.accept import accepted
from opscenter.jobs.schemas import Accepted
from opscenter.verify import service
from opscenter.verify.schemas import (
    RecoveryTestCreate,
    RunStatus,
    TestType,
    VerificationOut,
    VerificationStatusOut,
    VerifyRequest,
)

router = APIRouter(prefix="/verify", tags=["Verification"])
recovery_tests_router = APIRouter(prefix="/backup/recovery-tests", tags=["Verification"])
ReadVerification = Annotated[Principal, Depends(require("read:verification"))]
WriteVerification = Annotated[Principal, Depends(require("write:verification"))]
RunId = Annotated[
    int | None, Query(ge=1, le=2**31 - 1, description="A run of this backup; default its newest")
]


async def _start(
    request: Request,
    session: SessionDep,
    principal: Principal,
    backup_id: int,
    body: VerifyRequest,
) -> Accepted:
    run, job = await service.create_verification(session, principal, backup_id, body)
    await audit.record(
        session,
        action="verification.create",
        actor=principal,
        resource_type="backup",
        resource_id=backup_id,
        details={
            "run_id": run.id,
            "test_type": run.test_type,
            "scope": run.scope,
            "target_server_id": run.target_server_id,
        },
        origin=origin_of(request),
    )
    return accepted(
        request,
        job.id,
        run.id,
        f"{run.test_type} verification queued",
        status="queued",
        status_url=f"/api/v1/verify/{backup_id}/status?run_id={run.id}",
    )


@router.post(
    "/{backup_id}",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def start_verification(
    backup_id: PathId,
    body: VerifyRequest,
    principal: WriteVerification,
    session: SessionDep,
    request: Request,
) -> Accepted:
    """Queues a check of a completed backup. Follow it at `status_url`."""
    return await _start(request, session, principal, backup_id, body)


@router.get("", response_model=Page[VerificationOut])
async def list_verifications(
    principal: ReadVerification,
    session: SessionDep,
    paging: Paging,
    backup_id: QueryId = None,
    server_id: QueryId = None,
    test_type: TestType | None = None,
    status: RunStatus | None = None,
) -> Page[VerificationOut]:
    """Recent verification runs, newest first."""
    stmt = service.filter_runs(
        service.runs_query(principal),
        backup_id=backup_id,
        server_id=server_id,
        test_type=test_type,
        status=status,
    )
    rows, total = await _page(session, stmt, paging)
    return Page.of(rows, total, paging)


async def _page(
    session: SessionDep, stmt: Select[Any], paging: Paging
) -> tuple[list[VerificationOut], int]:
    rows, total = await paginate(session, stmt, paging)
    return [service.run_out(run, run.backup) for run in rows], total


@router.get(
    "/{backup_id}/status", response_model=VerificationStatusOut, responses=responses(NotFound)
)
async def verification_status(
    backup_id: PathId, principal: ReadVerification, session: SessionDep, run_id: RunId = None
) -> VerificationStatusOut:
    run, backup = await service.get_run(session, principal, backup_id, run_id)
    return service.status_out(run, backup, await service.job_of(session, run))


@router.get("/{backup_id}/result", response_model=VerificationOut, responses=responses(NotFound))
async def verification_result(
    backup_id: PathId, principal: ReadVerification, session: SessionDep, run_id: RunId = None
) -> VerificationOut:
    """The run's outcome: detail, errors, RTO and the per-table comparison."""
    run, backup = await service.get_run(session, principal, backup_id, run_id)
    return service.run_out(run, backup)


@router.post(
    "/{backup_id}/cancel", response_model=VerificationOut, responses=responses(NotFound, Conflict)
)
async def cancel_verification(
    backup_id: PathId,
    principal: WriteVerification,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
    run_id: RunId = None,
) -> VerificationOut:
    """Stops the backup's newest run (or `run_id`); a scratch database is dropped. The id
    may also be a running verification's own id (seed 000's `/verify/{id}/cancel`)."""
    run, backup, job = await service.cancel_run(session, principal, backup_id, run_id)
    job_id = job.id
    defer(request.state, lambda: ctx.runner.signal_cancel(job_id))
    await audit.record(
        session,
        action="verification.cancel",
        actor=principal,
        resource_type="backup",
        resource_id=backup.id,
        details={"run_id": run.id, "job_id": job_id},
        origin=origin_of(request),
    )
    return service.run_out(run, backup)


@recovery_tests_router.get("", response_model=Page[VerificationOut])
async def list_recovery_tests(
    principal: ReadVerification,
    session: SessionDep,
    paging: Paging,
    backup_id: QueryId = None,
    server_id: QueryId = None,
    status: RunStatus | None = None,
) -> Page[VerificationOut]:
    """Restore tests (verification runs of test_type `restore`), newest first."""
    stmt = service.filter_runs(
        service.runs_query(principal),
        backup_id=backup_id,
        server_id=server_id,
        test_type="restore",
        status=status,
    )
    rows, total = await _page(session, stmt, paging)
    return Page.of(rows, total, paging)


@recovery_tests_router.post(
    "",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def create_recovery_test(
    body: RecoveryTestCreate,
    principal: WriteVerification,
    session: SessionDep,
    request: Request,
) -> Accepted:
    """A restore test: scratch database, row counts compared, RTO recorded, dropped."""
    request_body = VerifyRequest(
        test_type="restore", scope=body.scope, target_server_id=body.target_server_id
    )
    return await _start(request, session, principal, body.backup_id, request_body)
