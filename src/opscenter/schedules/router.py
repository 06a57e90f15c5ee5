"""Schedules (seed 001) = backup jobs (seed 000: run, executions) = backup policies
(seed 002: `/backup/policies`, a thin view over the same service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.backups import service as backups
from opscenter.backups.schemas import BackupOut
from opscenter.core.clock import utcnow
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.errors import Conflict, InvalidInput, NotFound, responses
from opscenter.core.hostfiles import HostFiles
from opscenter.core.pagination import Page, Paging, PathId, QueryId, paginate
from opscenter.core.principal import Principal
from opscenter.jobs.accept import accepted
from opscenter.jobs.schemas import Accepted
from opscenter.schedules import service
from opscenter.schedules.schemas import (
    CronPreview,
    CronPreviewRequest,
    RunRequest,
    ScheduleCreate,
    ScheduleOut,
    ScheduleRunOut,
    ScheduleUpdate,
)

router = APIRouter(prefix="/schedules", tags=["Schedules"])
policies_router = APIRouter(prefix="/backup/policies", tags=["Backup policies (schedules)"])
ReadSchedules = Annotated[Principal, Depends(require("read:schedules"))]
WriteSchedules = Annotated[Principal, Depends(require("write:schedules"))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Retries with the same key within 24 h return the same run",
    ),
]


def _details(schedule: ScheduleOut) -> dict[str, object]:
    return {
        "name": schedule.name,
        "server_id": schedule.server_id,
        "target": schedule.database_name or schedule.source_path,
        "cron_expression": schedule.cron_expression,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
    }


@router.get("", response_model=Page[ScheduleOut])
async def list_schedules(
    principal: ReadSchedules,
    session: SessionDep,
    paging: Paging,
    server_id: QueryId = None,
    enabled: bool | None = None,
    is_active: bool | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[ScheduleOut]:
    stmt = service.filter_schedules(
        service.schedules_query(principal),
        server_id=server_id,
        enabled=enabled if enabled is not None else is_active,
        q=q,
    )
    rows, total = await paginate(session, stmt, paging)
    return Page.of([service.schedule_out(s) for s in rows], total, paging)


@router.post("/preview", response_model=CronPreview)
async def preview_schedule(body: CronPreviewRequest, principal: ReadSchedules) -> CronPreview:
    """The next runs of a cron expression in a timezone, and the expression in words;
    nothing is saved. Invalid expressions and unknown timezones are a 422."""
    return service.preview(body.cron_expression, body.timezone, body.count, utcnow())


@router.post(
    "",
    response_model=ScheduleOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def create_schedule(
    body: ScheduleCreate, principal: WriteSchedules, session: SessionDep, ctx: Ctx, request: Request
) -> ScheduleOut:
    """Without `server_id`, a `source_path` is one of the 'this host' server (seed 000)."""
    created = await service.create_schedule(session, principal, body, files=HostFiles(ctx.settings))
    out = service.schedule_out(created)
    await audit.record(
        session,
        action="schedule.create",
        actor=principal,
        resource_type="schedule",
        resource_id=out.id,
        details=_details(out),
        origin=origin_of(request),
    )
    return out


@router.get("/{schedule_id}", response_model=ScheduleOut, responses=responses(NotFound))
async def get_schedule(
    schedule_id: PathId, principal: ReadSchedules, session: SessionDep
) -> ScheduleOut:
    return service.schedule_out(await service.get_schedule(session, principal, schedule_id))


@router.put(
    "/{schedule_id}",
    response_model=ScheduleOut,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def update_schedule(
    schedule_id: PathId,
    body: ScheduleUpdate,
    principal: WriteSchedules,
    session: SessionDep,
    request: Request,
) -> ScheduleOut:
    schedule, changed = await service.update_schedule(session, principal, schedule_id, body)
    out = service.schedule_out(schedule)
    await audit.record(
        session,
        action="schedule.update",
        actor=principal,
        resource_type="schedule",
        resource_id=out.id,
        details={**_details(out), "changed": changed},
        origin=origin_of(request),
    )
    return out


@router.delete(
    "/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(NotFound)
)
async def delete_schedule(
    schedule_id: PathId, principal: WriteSchedules, session: SessionDep, request: Request
) -> None:
    """Its run history goes with it; its backups stay."""
    schedule = await service.delete_schedule(session, principal, schedule_id)
    await audit.record(
        session,
        action="schedule.delete",
        actor=principal,
        resource_type="schedule",
        resource_id=schedule_id,
        team_id=schedule.team_id,
        details={"name": schedule.name},
        origin=origin_of(request),
    )


async def _run(
    schedule_id: int,
    body: RunRequest,
    principal: Principal,
    session: SessionDep,
    request: Request,
    key: str | None,
) -> Accepted:
    result = await service.run_now(session, principal, schedule_id, body, idempotency_key=key)
    run = result.run
    assert run.backup_id is not None and run.job_id is not None
    if not result.replayed:
        await audit.record(
            session,
            action="schedule.run",
            actor=principal,
            resource_type="schedule",
            resource_id=schedule_id,
            details={
                "trigger": "manual",
                "backup_id": run.backup_id,
                "job_id": run.job_id,
                "idempotency_key": key,
            },
            origin=origin_of(request),
        )
    return accepted(
        request,
        run.job_id,
        run.backup_id,
        "Same run as before (idempotent)" if result.replayed else "Backup job queued",
        status=result.status,
        submit=not result.replayed,
    )


@router.post(
    "/{schedule_id}/run",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def run_schedule(
    schedule_id: PathId,
    principal: WriteSchedules,
    session: SessionDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    body: RunRequest | None = None,
) -> Accepted:
    """A backup now (seed 000's manual trigger); 409 while a run of it is in progress."""
    return await _run(
        schedule_id, body or RunRequest(), principal, session, request, idempotency_key
    )


@router.get(
    "/{schedule_id}/executions", response_model=Page[BackupOut], responses=responses(NotFound)
)
async def list_executions(
    schedule_id: PathId, principal: ReadSchedules, session: SessionDep, paging: Paging
) -> Page[BackupOut]:
    """The schedule's backups, newest first."""
    stmt = await service.executions_query(session, principal, schedule_id)
    rows, total = await paginate(session, stmt, paging)
    return Page.of([backups.backup_out(b) for b in rows], total, paging)


@router.get(
    "/{schedule_id}/runs", response_model=Page[ScheduleRunOut], responses=responses(NotFound)
)
async def list_runs(
    schedule_id: PathId, principal: ReadSchedules, session: SessionDep, paging: Paging
) -> Page[ScheduleRunOut]:
    """Every slot the scheduler claimed (started, skipped or failed) and every manual run."""
    stmt = await service.runs_query(session, principal, schedule_id)
    rows, total = await paginate(session, stmt, paging)
    return Page.of([service.run_out(r) for r in rows], total, paging)


# -- seed 002: /backup/policies are schedules -----------------------------------------------
@policies_router.get("", response_model=Page[ScheduleOut])
async def list_policies(
    principal: ReadSchedules, session: SessionDep, paging: Paging
) -> Page[ScheduleOut]:
    """The schedules, under seed 002's name."""
    return await list_schedules(principal, session, paging)


@policies_router.get("/{policy_id}", response_model=ScheduleOut, responses=responses(NotFound))
async def get_policy(
    policy_id: PathId, principal: ReadSchedules, session: SessionDep
) -> ScheduleOut:
    return await get_schedule(policy_id, principal, session)


@policies_router.post(
    "",
    response_model=ScheduleOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def create_policy(
    body: ScheduleCreate, principal: WriteSchedules, session: SessionDep, ctx: Ctx, request: Request
) -> ScheduleOut:
    """Creates a schedule."""
    return await create_schedule(body, principal, session, ctx, request)


@policies_router.put(
    "/{policy_id}",
    response_model=ScheduleOut,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def update_policy(
    policy_id: PathId,
    body: ScheduleUpdate,
    principal: WriteSchedules,
    session: SessionDep,
    request: Request,
) -> ScheduleOut:
    return await update_schedule(policy_id, body, principal, session, request)


@policies_router.post(
    "/{policy_id}/execute",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def execute_policy(
    policy_id: PathId,
    principal: WriteSchedules,
    session: SessionDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    body: RunRequest | None = None,
) -> Accepted:
    """Runs the schedule now, like `POST /schedules/{id}/run`."""
    return await _run(policy_id, body or RunRequest(), principal, session, request, idempotency_key)
