"""Commands (seed 001): `/commands`, `/commands/{id}/execute`, executions and their logs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import FileResponse

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.commands import service
from opscenter.commands.jobs import log_dir
from opscenter.commands.schemas import (
    CommandCreate,
    CommandOut,
    CommandType,
    CommandUpdate,
    ExecuteRequest,
    ExecutionAccepted,
    ExecutionOut,
    TargetPreview,
    TargetSelection,
)
from opscenter.core.context import Ctx, SessionDep, publish_after_commit
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.middleware import defer
from opscenter.core.pagination import (
    CursorPaging,
    KeysetPage,
    Page,
    Paging,
    PathId,
    keyset_page,
    paginate,
)
from opscenter.core.principal import Principal
from opscenter.jobs.accept import accepted
from opscenter.models import CommandExecution, Job

router = APIRouter(prefix="/commands", tags=["Commands"])
ReadCommands = Annotated[Principal, Depends(require("read:commands"))]
WriteCommands = Annotated[Principal, Depends(require("write:commands"))]
ExecuteCommands = Annotated[Principal, Depends(require("execute:commands"))]


def _changed(request: Request, team_id: int, action: str, command_id: int) -> None:
    publish_after_commit(
        request, Event(f"command.{action}", {"command_id": command_id}, team_id=team_id)
    )


@router.get("", response_model=Page[CommandOut])
async def list_commands(
    principal: ReadCommands,
    session: SessionDep,
    paging: Paging,
    q: Annotated[str | None, Query(max_length=200)] = None,
    type: CommandType | None = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[CommandOut]:
    rows, total = await paginate(
        session, service.commands_query(principal, q=q, type=type, tag=tag), paging
    )
    return Page.of([service.command_out(c) for c in rows], total, paging)


@router.post(
    "",
    response_model=CommandOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Conflict, InvalidInput, NotFound),
)
async def create_command(
    body: CommandCreate, principal: WriteCommands, session: SessionDep, request: Request
) -> CommandOut:
    """`{{name}}` placeholders get typed definitions; one without gets a conservative
    string. A placeholder inside quotes is refused: values are quoted for you."""
    cmd = await service.create_command(session, principal, body)
    await audit.record(
        session,
        action="command.create",
        actor=principal,
        resource_type="command",
        resource_id=cmd.id,
        details={"name": cmd.name, "type": cmd.type},
        origin=origin_of(request),
        team_id=cmd.team_id,
    )
    _changed(request, cmd.team_id, "created", cmd.id)
    return service.command_out(cmd)


# Execution routes come before /{command_id}, whose int path would take "executions".
@router.get("/executions", response_model=KeysetPage[ExecutionOut])
async def list_all_executions(
    principal: ReadCommands, session: SessionDep, paging: CursorPaging
) -> KeysetPage[ExecutionOut]:
    stmt = service.executions_query(principal)
    rows, total, next_cursor = await keyset_page(session, stmt, paging, CommandExecution.id)
    return KeysetPage.keyset([service.execution_out(e) for e in rows], total, paging, next_cursor)


@router.get(
    "/executions/{execution_id}", response_model=ExecutionOut, responses=responses(NotFound)
)
async def get_execution(
    execution_id: PathId, principal: ReadCommands, session: SessionDep
) -> ExecutionOut:
    """One result per target; output capped in the row (`truncated`), whole in the log."""
    e, results = await service.get_execution(session, principal, execution_id)
    return service.execution_out(e, results)


@router.post(
    "/executions/{execution_id}/cancel",
    response_model=ExecutionOut,
    responses=responses(NotFound, Conflict),
)
async def cancel_execution(
    execution_id: PathId,
    principal: ExecuteCommands,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> ExecutionOut:
    """Kills the command on every target still running it."""
    e, results = await service.get_execution(session, principal, execution_id)
    job = await session.get(Job, e.job_id) if e.job_id else None
    service.cancel_execution(e, job)
    if job is not None:
        job_id = job.id

        async def signal() -> None:
            await ctx.runner.signal_cancel(job_id)

        defer(request.state, signal)
    await audit.record(
        session,
        action="command.cancel",
        actor=principal,
        resource_type="command_execution",
        resource_id=e.id,
        details={"command": e.command_name},
        origin=origin_of(request),
        team_id=e.team_id,
    )
    return service.execution_out(e, results)


@router.get(
    "/executions/{execution_id}/results/{result_id}/log",
    response_class=FileResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        },
        **responses(NotFound),
    },
)
async def download_log(
    execution_id: PathId,
    result_id: PathId,
    principal: ReadCommands,
    session: SessionDep,
    ctx: Ctx,
    stream: Literal["stdout", "stderr"] = "stdout",
) -> FileResponse:
    """The whole output of one target, as the bytes it wrote (secret values masked)."""
    e, r = await service.get_result(session, principal, execution_id, result_id)
    path = log_dir(ctx, e.id, r.id) / stream
    if not path.is_file():
        raise NotFound("Log", f"{stream} of result {result_id}")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"execution-{e.id}-{r.server_name}-{stream}.log".replace("/", "_"),
    )


@router.get("/{command_id}", response_model=CommandOut, responses=responses(NotFound))
async def get_command(
    command_id: PathId, principal: ReadCommands, session: SessionDep
) -> CommandOut:
    return service.command_out(await service.get_command(session, principal, command_id))


@router.put(
    "/{command_id}",
    response_model=CommandOut,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def update_command(
    command_id: PathId,
    body: CommandUpdate,
    principal: WriteCommands,
    session: SessionDep,
    request: Request,
) -> CommandOut:
    cmd, changed = await service.update_command(session, principal, command_id, body)
    await audit.record(
        session,
        action="command.update",
        actor=principal,
        resource_type="command",
        resource_id=cmd.id,
        details={"changed": changed},
        origin=origin_of(request),
        team_id=cmd.team_id,
    )
    _changed(request, cmd.team_id, "updated", cmd.id)
    return service.command_out(cmd)


@router.delete(
    "/{command_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound, Conflict),
)
async def delete_command(
    command_id: PathId, principal: WriteCommands, session: SessionDep, request: Request
) -> None:
    """Its executions stay on record."""
    cmd = await service.delete_command(session, principal, command_id)
    await audit.record(
        session,
        action="command.delete",
        actor=principal,
        resource_type="command",
        resource_id=command_id,
        details={"name": cmd.name},
        origin=origin_of(request),
        team_id=cmd.team_id,
    )
    _changed(request, cmd.team_id, "deleted", command_id)


@router.post(
    "/{command_id}/targets",
    response_model=TargetPreview,
    responses=responses(NotFound, InvalidInput),
)
async def preview_targets(
    command_id: PathId, body: TargetSelection, principal: ReadCommands, session: SessionDep
) -> TargetPreview:
    """The servers a selection names, before running anything."""
    cmd = await service.get_command(session, principal, command_id)
    servers = await service.resolve_targets(session, principal, cmd.team_id, body)
    return service.preview(cmd, servers)


@router.post(
    "/{command_id}/execute",
    response_model=ExecutionAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(NotFound, InvalidInput, Forbidden),
)
async def execute_command(
    command_id: PathId,
    body: ExecuteRequest,
    principal: ExecuteCommands,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> ExecutionAccepted:
    """Runs as a job; follow `command:<execution_id>` on the WebSocket for its output.
    A production target needs `confirm` set to the command's name."""
    cmd = await service.get_command(session, principal, command_id)
    execution, job = await service.start_execution(session, ctx.keyring, principal, cmd, body)
    await audit.record(
        session,
        action="command.execute",
        actor=principal,
        resource_type="command_execution",
        resource_id=execution.id,
        details={
            "command_id": cmd.id,
            "command": cmd.name,
            "command_text": execution.command_text,
            "server_ids": [execution.server_id],
        },
        origin=origin_of(request),
        team_id=cmd.team_id,
    )
    answer = accepted(
        request,
        job.id,
        execution.id,
        f"Running {cmd.name!r}",
        status_url=f"/api/v1/commands/executions/{execution.id}",
    )
    return ExecutionAccepted(**answer.model_dump(), execution_id=execution.id)


@router.get(
    "/{command_id}/executions", response_model=Page[ExecutionOut], responses=responses(NotFound)
)
async def list_executions(
    command_id: PathId, principal: ReadCommands, session: SessionDep, paging: Paging
) -> Page[ExecutionOut]:
    await service.get_command(session, principal, command_id)
    rows, total = await paginate(session, service.executions_query(principal, command_id), paging)
    return Page.of([service.execution_out(e) for e in rows], total, paging)
