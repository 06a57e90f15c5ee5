"""Commands: templates (CRUD), target selection, and executions as jobs."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Select, String, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.auth.permissions import HOST_FILES
from opscenter.commands import templates
from opscenter.commands.schemas import (
    CommandCreate,
    CommandOut,
    CommandUpdate,
    ExecuteRequest,
    ExecutionOut,
    ResultOut,
    TargetOut,
    TargetPreview,
    TargetSelection,
    VariableOut,
)
from opscenter.commands.templates import TemplateError, Variable
from opscenter.core.clock import utcnow
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.core.security import Keyring
from opscenter.jobs import service as jobs
from opscenter.models import Command, CommandExecution, CommandResult, Job, ResultStatus, Server
from opscenter.servers.schemas import HOSTS, ServerType

JOB_KIND = "command"
DB_SERVERS = {ServerType.POSTGRESQL.value, ServerType.MYSQL.value}


def command_out(cmd: Command) -> CommandOut:
    return CommandOut(
        id=cmd.id,
        team_id=cmd.team_id,
        name=cmd.name,
        description=cmd.description,
        command_template=cmd.command_template,
        type=cmd.type,
        tags=list(cmd.tags),
        variables=[VariableOut(**Variable.of(v).as_dict()) for v in cmd.variables],
        timeout_seconds=cmd.timeout_seconds,
        database=cmd.database,
        writes=cmd.writes,
        created_by=cmd.created_by,
        created_at=cmd.created_at,
        updated_at=cmd.updated_at,
    )


def commands_query(
    principal: Principal, *, q: str | None = None, type: str | None = None, tag: str | None = None
) -> Select[Command]:
    stmt = readable(select(Command), Command, principal).order_by(Command.name, Command.id)
    if q:
        stmt = stmt.where(func.lower(Command.name).contains(q.lower()))
    if type:
        stmt = stmt.where(Command.type == type)
    if tag:
        # JSON lists differ per backend; a quoted substring of the list is exact enough.
        stmt = stmt.where(cast(Command.tags, String).contains(f'"{tag}"'))
    return stmt


async def get_command(session: AsyncSession, principal: Principal, command_id: int) -> Command:
    return await get_readable(session, Command, command_id, principal, name="Command")


def _definitions(template: str, kind: str, given: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        templates.check_shell_template(template)
        defs = templates.complete_definitions(template, [Variable.of(v) for v in given])
    except TemplateError as exc:
        raise InvalidInput(str(exc)) from None
    return [d.as_dict() for d in defs]


async def _unique(session: AsyncSession, team_id: int, name: str, own: int | None = None) -> None:
    stmt = select(Command.id).where(Command.team_id == team_id, Command.name == name)
    found = await session.scalar(stmt)
    if found is not None and found != own:
        raise Conflict(f"A command named {name!r} already exists in this team; pick another name")


async def create_command(
    session: AsyncSession, principal: Principal, data: CommandCreate
) -> Command:
    team_id = data.team_id or min(principal.team_ids, default=None)
    if team_id is None:
        raise InvalidInput("You belong to no team; give team_id or ask an admin to add you")
    check_team_access(principal, team_id)
    variables = _definitions(
        data.command_template, data.type, [v.model_dump() for v in data.variables]
    )
    await _unique(session, team_id, data.name)
    cmd = Command(
        team_id=team_id,
        name=data.name,
        description=data.description,
        command_template=data.command_template,
        type=data.type,
        tags=list(dict.fromkeys(data.tags)),
        variables=variables,
        timeout_seconds=data.timeout_seconds,
        database=data.database,
        writes=data.writes,
        created_by=principal.username,
        created_by_id=principal.user_id or None,
    )
    session.add(cmd)
    await session.flush()
    return cmd


async def update_command(
    session: AsyncSession, principal: Principal, command_id: int, data: CommandUpdate
) -> tuple[Command, list[str]]:
    cmd = await get_command(session, principal, command_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name") is not None:
        await _unique(session, cmd.team_id, changes["name"], cmd.id)
    template = changes.get("command_template") or cmd.command_template
    kind = changes.get("type") or cmd.type
    if "command_template" in changes or "variables" in changes or "type" in changes:
        given = changes["variables"] if changes.get("variables") is not None else cmd.variables
        # Definitions of placeholders the new template dropped go with them.
        if changes.get("variables") is None:
            names = set(templates.placeholders(template))
            given = [v for v in given if v["name"] in names]
        changes["variables"] = _definitions(template, kind, given)
    for key, value in changes.items():
        if key == "tags" and value is not None:
            value = list(dict.fromkeys(value))
        if value is not None or key == "database":
            setattr(cmd, key, value)
    await session.flush()
    return cmd, sorted(changes)


async def delete_command(session: AsyncSession, principal: Principal, command_id: int) -> Command:
    cmd = await get_command(session, principal, command_id)
    running = await session.scalar(
        select(CommandExecution.id).where(
            CommandExecution.command_id == cmd.id,
            CommandExecution.status.in_((ResultStatus.PENDING, ResultStatus.RUNNING)),
        )
    )
    if running is not None:
        raise Conflict(f"Execution {running} of this command is still running; cancel it first")
    await session.delete(cmd)
    await session.flush()
    return cmd


# ------------------------------------------------------------------------------- targets


def _tags_match(server: Server, wanted: dict[str, str]) -> bool:
    tags = server.tags or {}
    return all(k in tags and (v in ("", "*") or str(tags[k]) == v) for k, v in wanted.items())


async def resolve_targets(
    session: AsyncSession, principal: Principal, team_id: int, sel: TargetSelection
) -> list[Server]:
    """The servers of a selection, in the command's team, each readable by the caller."""
    stmt = readable(select(Server), Server, principal).where(Server.team_id == team_id)
    if sel.server_id is not None or sel.server_ids is not None:
        ids = (
            [sel.server_id]
            if sel.server_id is not None
            else list(dict.fromkeys(sel.server_ids or []))
        )
        rows = {s.id: s for s in (await session.scalars(stmt.where(Server.id.in_(ids)))).all()}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise NotFound("Server", ", ".join(map(str, missing)))
        return [rows[i] for i in ids]
    if sel.environment is not None:
        stmt = stmt.where(Server.environment == sel.environment.value)
    servers = (await session.scalars(stmt.order_by(Server.name))).all()
    return [s for s in servers if _tags_match(s, sel.tags or {})]


def target_out(s: Server) -> TargetOut:
    return TargetOut(
        id=s.id,
        name=s.name,
        type=s.type,
        environment=s.environment,
        host=s.host,
        health_status=s.health_status,
    )


def preview(cmd: Command, servers: list[Server]) -> TargetPreview:
    production = any(s.environment == "production" for s in servers)
    return TargetPreview(
        items=[target_out(s) for s in servers],
        total=len(servers),
        production=production,
        confirmation_required=production,
        confirm_text=cmd.name if production else None,
    )


def check_runnable(principal: Principal, cmd: Command, server: Server) -> None:
    """Whether `cmd` can run on `server` at all, and by this caller."""
    if cmd.type == "sql":
        if server.type not in DB_SERVERS and not (server.type in HOSTS and server.db_engine):
            raise InvalidInput(
                f"{server.name} has no database to run SQL in; pick a PostgreSQL or MySQL "
                "server, or a host with a database engine"
            )
    elif server.type not in HOSTS:
        raise InvalidInput(
            f"{server.name} is a database server; shell and docker commands run on hosts "
            "(local, ssh, docker) - use a sql command for it"
        )
    if (
        server.type == ServerType.LOCAL.value
        and cmd.type != "sql"
        and not principal.can(HOST_FILES)
    ):
        raise Forbidden(
            f"Running shell commands on {server.name} (the host opscenter runs on) needs the "
            f"{HOST_FILES} permission; ask an admin"
        )


# ------------------------------------------------------------------------------- execute


def sealed_context(execution_id: int) -> str:
    return f"command_executions.script:{execution_id}"


async def create_execution(
    session: AsyncSession,
    keyring: Keyring,
    principal: Principal,
    cmd: Command,
    req: ExecuteRequest,
    *,
    sop_run_id: int | None = None,
) -> tuple[CommandExecution, str]:
    """The execution's record with one pending result per target, and what it runs,
    sealed (it holds secret values: only its ciphertext is kept)."""
    servers = await resolve_targets(session, principal, cmd.team_id, req)
    if not servers:
        raise InvalidInput("No server matches the selection; preview it with /targets first")
    for server in servers:
        check_runnable(principal, cmd, server)
    production = [s.name for s in servers if s.environment == "production"]
    if production and req.confirm != cmd.name:
        raise InvalidInput(
            f"production target{'s' if len(production) > 1 else ''} "
            f"({', '.join(production)}): set confirm to the command's name ({cmd.name!r}) "
            "to run it there"
        )
    rendered = render_for(cmd, servers, req.variables)
    execution = CommandExecution(
        team_id=cmd.team_id,
        command_id=cmd.id,
        command_name=cmd.name,
        type=cmd.type,
        server_id=servers[0].id,
        command_text=rendered.shown,
        variables=rendered.values,
        timeout_seconds=cmd.timeout_seconds,
        executed_by=principal.username,
        executed_by_id=principal.user_id or None,
        sop_run_id=sop_run_id,
    )
    session.add(execution)
    await session.flush()
    for s in servers:
        session.add(
            CommandResult(
                execution_id=execution.id,
                server_id=s.id,
                server_name=s.name,
                environment=s.environment,
            )
        )
    sealed = keyring.encrypt_secret(
        json.dumps(
            {
                "script": rendered.text,
                "secrets": list(rendered.secrets),
                "database": cmd.database,
                "writes": cmd.writes,
            }
        ),
        context=sealed_context(execution.id),
    )
    await session.flush()
    return execution, sealed


def render_for(
    cmd: Command, servers: list[Server], variables: dict[str, str | int]
) -> templates.Rendered:
    defs = [Variable.of(v) for v in cmd.variables]
    kind = "shell"
    if cmd.type == "sql":
        engines = {_engine(s) for s in servers}
        if len(engines) != 1:
            raise InvalidInput("SQL runs on one kind of database at a time; split the targets")
        kind = f"sql:{engines.pop()}"
    try:
        return templates.render(cmd.command_template, defs, variables, kind=kind)
    except TemplateError as exc:
        raise InvalidInput(str(exc)) from None


async def start_execution(
    session: AsyncSession,
    keyring: Keyring,
    principal: Principal,
    cmd: Command,
    req: ExecuteRequest,
) -> tuple[CommandExecution, Job]:
    execution, sealed = await create_execution(session, keyring, principal, cmd, req)
    job = await jobs.create_job(
        session,
        principal,
        kind=JOB_KIND,
        team_id=cmd.team_id,
        lock_key=None,
        resource_type="execution",
        resource_id=execution.id,
        params={"execution_id": execution.id, "sealed": sealed},
    )
    execution.job_id = job.id
    await session.flush()
    return execution, job


def _engine(server: Server) -> str:
    return server.type if server.type in DB_SERVERS else str(server.db_engine)


# ------------------------------------------------------------------------------- reads


def result_out(r: CommandResult) -> ResultOut:
    return ResultOut.model_validate(r)


def execution_out(e: CommandExecution, results: list[CommandResult] | None = None) -> ExecutionOut:
    out = ExecutionOut.model_validate(e)
    if results is not None:
        out.results = [result_out(r) for r in results]
    return out


def executions_query(
    principal: Principal, command_id: int | None = None
) -> Select[CommandExecution]:
    stmt = readable(select(CommandExecution), CommandExecution, principal)
    if command_id is not None:
        stmt = stmt.where(CommandExecution.command_id == command_id)
    return stmt.order_by(CommandExecution.id.desc())


async def get_execution(
    session: AsyncSession, principal: Principal, execution_id: int
) -> tuple[CommandExecution, list[CommandResult]]:
    e = await get_readable(session, CommandExecution, execution_id, principal, name="Execution")
    results = (
        await session.scalars(
            select(CommandResult)
            .where(CommandResult.execution_id == e.id)
            .order_by(CommandResult.id)
        )
    ).all()
    return e, list(results)


async def get_result(
    session: AsyncSession, principal: Principal, execution_id: int, result_id: int
) -> tuple[CommandExecution, CommandResult]:
    e, results = await get_execution(session, principal, execution_id)
    for r in results:
        if r.id == result_id:
            return e, r
    raise NotFound("Result", result_id)


def cancel_execution(e: CommandExecution, job: Job | None) -> None:
    if e.status not in (ResultStatus.PENDING, ResultStatus.RUNNING):
        raise Conflict(f"Execution {e.id} already ended ({e.status})")
    if job is not None:
        jobs.request_cancel(job)
        if job.status == "cancelled":  # it never started: nothing will finish it
            e.status = ResultStatus.CANCELLED
            e.completed_at = utcnow()
