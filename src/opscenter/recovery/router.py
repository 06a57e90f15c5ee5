"""Seed 002's `/backup/status` and `/backup/recovery-points`. A recovery point is a
completed backup: restore and delete call the very services behind `POST
/backups/{id}/restore` and `DELETE /backups/{id}`, so the two paths cannot drift apart."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from opscenter.auth.deps import origin_of, require
from opscenter.backups import service as backups
from opscenter.backups.schemas import RestoreRequest
from opscenter.core.clock import utcnow
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.hostfiles import HostFiles
from opscenter.core.pagination import Dates, Page, Paging, PathId, QueryId, paginate
from opscenter.core.principal import Principal
from opscenter.jobs.accept import accepted
from opscenter.jobs.schemas import Accepted
from opscenter.recovery import service
from opscenter.recovery.schemas import BackupStatus, RecoveryPointOut

status_router = APIRouter(prefix="/backup/status", tags=["Backup status"])
points_router = APIRouter(prefix="/backup/recovery-points", tags=["Recovery points"])
ReadBackups = Annotated[Principal, Depends(require("read:backups"))]
WriteBackups = Annotated[Principal, Depends(require("write:backups"))]
Restorer = Annotated[Principal, Depends(require("execute:restores"))]


@status_router.get("", response_model=BackupStatus)
async def backup_status(principal: ReadBackups, session: SessionDep) -> BackupStatus:
    """Per target (each database or path this platform backs up, and each external job):
    the newest good backup, its age against the schedule (RPO), failures in 24 h and the
    storage used. Red targets come first."""
    return await service.backup_status(session, principal, utcnow())


@points_router.get("", response_model=Page[RecoveryPointOut])
async def list_recovery_points(
    principal: ReadBackups,
    session: SessionDep,
    paging: Paging,
    dates: Dates,
    server_id: QueryId = None,
    schedule_id: QueryId = None,
    database_name: Annotated[str | None, Query(max_length=4096)] = None,
) -> Page[RecoveryPointOut]:
    """Completed backups, newest first."""
    stmt = service.recovery_points_query(
        principal,
        server_id=server_id,
        database_name=database_name,
        schedule_id=schedule_id,
        start=dates.start,
        end=dates.end,
    )
    rows, total = await paginate(session, stmt, paging)
    return Page.of([service.recovery_point_out(b) for b in rows], total, paging)


@points_router.get(
    "/{recovery_point_id}", response_model=RecoveryPointOut, responses=responses(NotFound)
)
async def get_recovery_point(
    recovery_point_id: PathId, principal: ReadBackups, session: SessionDep
) -> RecoveryPointOut:
    backup = await service.get_recovery_point(session, principal, recovery_point_id)
    return service.recovery_point_out(backup)


@points_router.post(
    "/{recovery_point_id}/restore",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(NotFound, Conflict, Forbidden, InvalidInput),
)
async def restore_recovery_point(
    recovery_point_id: PathId,
    body: RestoreRequest,
    principal: Restorer,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> Accepted:
    """Exactly `POST /backups/{id}/restore`."""
    await service.get_recovery_point(session, principal, recovery_point_id)
    backup, job = await backups.queue_restore(
        session,
        principal,
        ctx.keyring,
        HostFiles(ctx.settings),
        recovery_point_id,
        body,
        origin_of(request),
    )
    return accepted(request, job.id, backup.id, backups.RESTORE_QUEUED)


@points_router.delete(
    "/{recovery_point_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound, Conflict),
)
async def delete_recovery_point(
    recovery_point_id: PathId,
    principal: WriteBackups,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> None:
    """Exactly `DELETE /backups/{id}`: the artifact, its manifest, then the catalog row."""
    await service.get_recovery_point(session, principal, recovery_point_id)
    await backups.remove_backup(
        session, principal, ctx.storages, recovery_point_id, origin_of(request)
    )
