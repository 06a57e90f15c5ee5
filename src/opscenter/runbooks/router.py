"""Runbooks (seed 004's SOPs): `/sops`, `/sops/{id}/execute`, `/sops/executions/{id}`
with pause, resume, cancel, ticking manual steps and deciding approvals."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import Ctx, SessionDep, publish_after_commit
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.middleware import defer
from opscenter.core.pagination import Page, Paging, PathId, paginate
from opscenter.core.principal import Principal
from opscenter.jobs.accept import accepted
from opscenter.jobs.schemas import Accepted
from opscenter.models import Job, SopRun
from opscenter.runbooks import service
from opscenter.runbooks.schemas import (
    BuiltinCreate,
    BuiltinOut,
    SopCreate,
    SopExecute,
    SopOut,
    SopRunOut,
    SopUpdate,
    SopVersionOut,
    StepAction,
)

router = APIRouter(prefix="/sops", tags=["Runbooks (SOPs)"])
ReadSops = Annotated[Principal, Depends(require("read:sops"))]
WriteSops = Annotated[Principal, Depends(require("write:sops"))]
ExecuteSops = Annotated[Principal, Depends(require("execute:sops"))]
Position = Annotated[int, Path(ge=0, le=99)]


def _submit(ctx: Ctx, request: Request, job: Job | None) -> None:
    """The next advance job reaches the runner once this request committed."""
    if job is None:
        return
    job_id = job.id

    async def submit() -> None:
        ctx.runner.submit(job_id)

    defer(request.state, submit)


def _news(request: Request, run: SopRun, action: str, **data: object) -> None:
    event = Event(
        f"sop.{action}",
        {"run_id": run.id, "sop_id": run.sop_id, "status": run.status, **data},
        team_id=run.team_id,
    )
    publish_after_commit(request, event)


async def _record(
    session: SessionDep,
    request: Request,
    principal: Principal,
    action: str,
    type_: str,
    ident: int,
    team_id: int,
    **details: object,
) -> None:
    await audit.record(
        session,
        action=action,
        actor=principal,
        resource_type=type_,
        resource_id=ident,
        details=details,
        origin=origin_of(request),
        team_id=team_id,
    )


@router.get("", response_model=Page[SopOut])
async def list_sops(
    principal: ReadSops,
    session: SessionDep,
    paging: Paging,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[SopOut]:
    rows, total = await paginate(session, service.sops_query(principal, q), paging)
    return Page.of([service.sop_out(s) for s in rows], total, paging)


@router.post(
    "",
    response_model=SopOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Conflict, InvalidInput, NotFound),
)
async def create_sop(
    body: SopCreate, principal: WriteSops, session: SessionDep, request: Request
) -> SopOut:
    sop = await service.create_sop(session, principal, body)
    await _record(
        session,
        request,
        principal,
        "sop.create",
        "sop",
        sop.id,
        sop.team_id,
        name=sop.name,
        steps=len(sop.steps),
    )
    return service.sop_out(sop)


@router.get("/builtins", response_model=Page[BuiltinOut])
async def list_builtins(_: ReadSops) -> Page[BuiltinOut]:
    """Runbooks that ship with opscenter; add one to a team to run it."""
    return Page.whole(service.builtins_out())


@router.post(
    "/builtins/{key}",
    response_model=SopOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Conflict, InvalidInput, NotFound),
)
async def add_builtin(
    key: Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9-]+$")],
    body: BuiltinCreate,
    principal: WriteSops,
    session: SessionDep,
    request: Request,
) -> SopOut:
    sop = await service.add_builtin(session, principal, key, body)
    await _record(
        session, request, principal, "sop.create", "sop", sop.id, sop.team_id,
        name=sop.name, builtin=key,
    )  # fmt: skip
    return service.sop_out(sop)


@router.get("/executions", response_model=Page[SopRunOut])
async def list_runs(
    principal: ReadSops,
    session: SessionDep,
    paging: Paging,
    sop_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Page[SopRunOut]:
    rows, total = await paginate(session, service.runs_query(principal, sop_id), paging)
    return Page.of([service.run_out(r) for r in rows], total, paging)


@router.get("/executions/{run_id}", response_model=SopRunOut, responses=responses(NotFound))
async def get_run(run_id: PathId, principal: ReadSops, session: SessionDep) -> SopRunOut:
    """Each step: its status, who did what and when, its note and outputs."""
    run, steps = await service.get_run(session, principal, run_id)
    return service.run_out(run, steps)


@router.post(
    "/executions/{run_id}/steps/{position}/complete",
    response_model=SopRunOut,
    responses=responses(NotFound, Conflict),
)
async def complete_step(
    run_id: PathId,
    position: Position,
    body: StepAction,
    principal: ExecuteSops,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> SopRunOut:
    """Tick a manual step (with an optional note); the run goes on."""
    run, steps, job = await service.complete_manual(session, principal, run_id, position, body.note)
    await _record(
        session,
        request,
        principal,
        "sop.step_complete",
        "sop_run",
        run.id,
        run.team_id,
        step=position,
        note=body.note,
    )
    _submit(ctx, request, job)
    _news(request, run, "progress", step=position, step_status="completed")
    return service.run_out(run, steps)


async def _decide(
    approve: bool,
    run_id: int,
    position: int,
    body: StepAction,
    principal: Principal,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> SopRunOut:
    run, steps, job = await service.decide_approval(
        session, principal, run_id, position, body.note, approve=approve
    )
    verb = "approve" if approve else "reject"
    await _record(
        session,
        request,
        principal,
        f"sop.{verb}",
        "sop_run",
        run.id,
        run.team_id,
        step=position,
        note=body.note,
    )
    _submit(ctx, request, job)
    _news(request, run, "approved" if approve else "rejected", step=position)
    return service.run_out(run, steps)


@router.post(
    "/executions/{run_id}/steps/{position}/approve",
    response_model=SopRunOut,
    responses=responses(NotFound, Conflict, Forbidden),
)
async def approve_step(
    run_id: PathId,
    position: Position,
    body: StepAction,
    principal: ExecuteSops,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> SopRunOut:
    """Only a user holding the step's approver role, and not the one who started the run."""
    return await _decide(True, run_id, position, body, principal, session, ctx, request)


@router.post(
    "/executions/{run_id}/steps/{position}/reject",
    response_model=SopRunOut,
    responses=responses(NotFound, Conflict, Forbidden),
)
async def reject_step(
    run_id: PathId,
    position: Position,
    body: StepAction,
    principal: ExecuteSops,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> SopRunOut:
    """Stops the run."""
    return await _decide(False, run_id, position, body, principal, session, ctx, request)


@router.post(
    "/executions/{run_id}/pause", response_model=SopRunOut, responses=responses(NotFound, Conflict)
)
async def pause_run(
    run_id: PathId, principal: ExecuteSops, session: SessionDep, request: Request
) -> SopRunOut:
    """A running step finishes; the run stops before the next one."""
    run = await service.pause(session, principal, run_id)
    await _record(session, request, principal, "sop.pause", "sop_run", run.id, run.team_id)
    _news(request, run, "paused")
    return service.run_out(run, await service.step_runs(session, run.id))


@router.post(
    "/executions/{run_id}/resume",
    response_model=SopRunOut,
    responses=responses(NotFound, Conflict),
)
async def resume_run(
    run_id: PathId, principal: ExecuteSops, session: SessionDep, ctx: Ctx, request: Request
) -> SopRunOut:
    run, job = await service.resume(session, principal, run_id)
    await _record(session, request, principal, "sop.resume", "sop_run", run.id, run.team_id)
    _submit(ctx, request, job)
    _news(request, run, "resumed")
    return service.run_out(run, await service.step_runs(session, run.id))


@router.post(
    "/executions/{run_id}/cancel",
    response_model=SopRunOut,
    responses=responses(NotFound, Conflict),
)
async def cancel_run(
    run_id: PathId, principal: ExecuteSops, session: SessionDep, ctx: Ctx, request: Request
) -> SopRunOut:
    """Kills a command step that is running."""
    run, job = await service.cancel(session, principal, run_id)
    if job is not None:
        job_id = job.id

        async def signal() -> None:
            await ctx.runner.signal_cancel(job_id)

        defer(request.state, signal)
    await _record(session, request, principal, "sop.cancel", "sop_run", run.id, run.team_id)
    _news(request, run, "cancelled")
    return service.run_out(run, await service.step_runs(session, run.id))


@router.get("/{sop_id}", response_model=SopOut, responses=responses(NotFound))
async def get_sop(sop_id: PathId, principal: ReadSops, session: SessionDep) -> SopOut:
    return service.sop_out(await service.get_sop(session, principal, sop_id))


@router.put(
    "/{sop_id}", response_model=SopOut, responses=responses(NotFound, Conflict, InvalidInput)
)
async def update_sop(
    sop_id: PathId,
    body: SopUpdate,
    principal: WriteSops,
    session: SessionDep,
    request: Request,
) -> SopOut:
    """A new version; runs keep the one they started with."""
    sop = await service.update_sop(session, principal, sop_id, body)
    await _record(
        session,
        request,
        principal,
        "sop.update",
        "sop",
        sop.id,
        sop.team_id,
        version=sop.version,
        changed=sorted(body.model_dump(exclude_unset=True)),
    )
    return service.sop_out(sop)


@router.delete(
    "/{sop_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(NotFound, Conflict)
)
async def delete_sop(
    sop_id: PathId, principal: WriteSops, session: SessionDep, request: Request
) -> None:
    """Its runs stay on record."""
    sop = await service.delete_sop(session, principal, sop_id)
    await _record(
        session, request, principal, "sop.delete", "sop", sop_id, sop.team_id, name=sop.name
    )


@router.get("/{sop_id}/versions", response_model=list[SopVersionOut], responses=responses(NotFound))
async def list_versions(
    sop_id: PathId, principal: ReadSops, session: SessionDep
) -> list[SopVersionOut]:
    sop = await service.get_sop(session, principal, sop_id)
    return [SopVersionOut.model_validate(v) for v in await service.versions(session, sop)]


@router.post(
    "/{sop_id}/execute",
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(NotFound, InvalidInput, Forbidden),
)
async def execute_sop(
    sop_id: PathId,
    body: SopExecute,
    principal: ExecuteSops,
    session: SessionDep,
    request: Request,
) -> Accepted:
    """Starts a run of the current version; follow it at `status_url` or on the WebSocket
    channel `sop:<id>`."""
    sop = await service.get_sop(session, principal, sop_id)
    run, job = await service.start_run(session, principal, sop, body)
    await _record(
        session,
        request,
        principal,
        "sop.execute",
        "sop_run",
        run.id,
        run.team_id,
        sop_id=sop.id,
        version=sop.version,
        server_ids=run.server_ids,
    )
    _news(request, run, "started", version=run.version)
    return accepted(
        request,
        job.id,
        run.id,
        f"Running {sop.name!r} (version {sop.version})",
        status="running",
        status_url=f"/api/v1/sops/executions/{run.id}",
    )
