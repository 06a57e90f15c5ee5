"""Runbooks (seed 004's SOPs): versioned step lists, runs, and what people do in them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.commands import service as commands
from opscenter.commands.schemas import ExecuteRequest
from opscenter.core.clock import utcnow
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from opscenter.core.principal import SYSTEM, Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.jobs import service as jobs
from opscenter.models import Job, Server, Sop, SopRun, SopStepRun, SopVersion
from opscenter.runbooks.builtins import BUILTINS
from opscenter.runbooks.rotation import ENGINES
from opscenter.runbooks.schemas import (
    BuiltinCreate,
    BuiltinOut,
    SopCreate,
    SopExecute,
    SopOut,
    SopRunOut,
    SopUpdate,
    StepIn,
    StepRunOut,
)

JOB_KIND = "sop"
ACTIVE = ("running", "waiting", "paused")
TERMINAL = ("completed", "failed", "cancelled")


def sop_out(sop: Sop) -> SopOut:
    return SopOut.model_validate(sop)


def sops_query(principal: Principal, q: str | None = None) -> Select[Sop]:
    stmt = readable(select(Sop), Sop, principal).order_by(Sop.name, Sop.id)
    if q:
        stmt = stmt.where(func.lower(Sop.name).contains(q.lower()))
    return stmt


async def get_sop(session: AsyncSession, principal: Principal, sop_id: int) -> Sop:
    return await get_readable(session, Sop, sop_id, principal, name="SOP")


async def _check_steps(
    session: AsyncSession, principal: Principal, team_id: int, steps: list[StepIn]
) -> None:
    """Each command step names a command of the runbook's team."""
    for step in steps:
        if step.command_id is not None:
            cmd = await commands.get_command(session, principal, step.command_id)
            if cmd.team_id != team_id:
                raise NotFound("Command", step.command_id)


async def _check_servers(
    session: AsyncSession, principal: Principal, team_id: int, ids: list[int]
) -> None:
    if ids:
        found = set(
            (
                await session.scalars(
                    readable(select(Server.id), Server, principal).where(
                        Server.id.in_(ids), Server.team_id == team_id
                    )
                )
            ).all()
        )
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound("Server", ", ".join(map(str, missing)))


async def _unique(session: AsyncSession, team_id: int, name: str, own: int | None = None) -> None:
    found = await session.scalar(select(Sop.id).where(Sop.team_id == team_id, Sop.name == name))
    if found is not None and found != own:
        raise Conflict(f"A runbook named {name!r} already exists in this team; pick another name")


def _snapshot(sop: Sop, who: str) -> SopVersion:
    return SopVersion(
        sop_id=sop.id,
        version=sop.version,
        name=sop.name,
        description=sop.description,
        steps=sop.steps,
        server_ids=sop.server_ids,
        created_by=who,
    )


async def create_sop(session: AsyncSession, principal: Principal, data: SopCreate) -> Sop:
    team_id = data.team_id or min(principal.team_ids, default=None)
    if team_id is None:
        raise InvalidInput("You belong to no team; give team_id or ask an admin to add you")
    check_team_access(principal, team_id)
    await _check_steps(session, principal, team_id, data.steps)
    await _check_servers(session, principal, team_id, data.server_ids)
    await _unique(session, team_id, data.name)
    sop = Sop(
        team_id=team_id,
        name=data.name,
        description=data.description,
        category=data.category,
        version=1,
        steps=[s.model_dump() for s in data.steps],
        server_ids=list(dict.fromkeys(data.server_ids)),
        created_by=principal.username,
        created_by_id=principal.user_id or None,
    )
    session.add(sop)
    await session.flush()
    session.add(_snapshot(sop, principal.username))
    await session.flush()
    return sop


def builtins_out() -> list[BuiltinOut]:
    return [BuiltinOut(key=k, **v) for k, v in BUILTINS.items()]


def _filled(step: dict[str, Any], data: BuiltinCreate) -> dict[str, Any]:
    if step["type"] != "restore":
        return step
    return {
        **step,
        "database_name": data.database_name,
        "target_server_id": data.target_server_id,
        "target_database": data.target_database,
        "masking_rules": data.masking_rules,
    }


async def add_builtin(
    session: AsyncSession, principal: Principal, key: str, data: BuiltinCreate
) -> Sop:
    """A team's own copy of a built-in runbook, for its servers."""
    builtin = BUILTINS.get(key)
    if builtin is None:
        raise NotFound("Built-in runbook", key)
    sop = await create_sop(
        session,
        principal,
        SopCreate(
            name=data.name or builtin["name"],
            description=builtin["description"],
            category="built-in",
            steps=[StepIn(**_filled(step, data)) for step in builtin["steps"]],
            server_ids=data.server_ids,
            team_id=data.team_id,
        ),
    )
    sop.builtin = key
    await session.flush()
    return sop


async def update_sop(
    session: AsyncSession, principal: Principal, sop_id: int, data: SopUpdate
) -> Sop:
    """Every change is a new version; runs keep the version they started with."""
    sop = await get_sop(session, principal, sop_id)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if not changes:
        return sop
    if "name" in changes:
        await _unique(session, sop.team_id, changes["name"], sop.id)
    if data.steps is not None:
        await _check_steps(session, principal, sop.team_id, data.steps)
    if data.server_ids is not None:
        await _check_servers(session, principal, sop.team_id, data.server_ids)
    for key, value in changes.items():
        setattr(sop, key, value)
    sop.version += 1
    await session.flush()
    session.add(_snapshot(sop, principal.username))
    await session.flush()
    return sop


async def delete_sop(session: AsyncSession, principal: Principal, sop_id: int) -> Sop:
    sop = await get_sop(session, principal, sop_id)
    active = await session.scalar(
        select(SopRun.id).where(SopRun.sop_id == sop.id, SopRun.status.in_(ACTIVE))
    )
    if active is not None:
        raise Conflict(f"Run {active} of this runbook is still going; cancel it first")
    await session.delete(sop)
    await session.flush()
    return sop


async def versions(session: AsyncSession, sop: Sop) -> list[SopVersion]:
    rows = await session.scalars(
        select(SopVersion).where(SopVersion.sop_id == sop.id).order_by(SopVersion.version.desc())
    )
    return list(rows.all())


# ------------------------------------------------------------------------------- runs


def step_targets(step: dict[str, Any], run_servers: list[int]) -> list[int]:
    return list(step.get("server_ids") or run_servers)


async def start_run(
    session: AsyncSession, principal: Principal, sop: Sop, data: SopExecute
) -> tuple[SopRun, Job]:
    """Checks every command step as its run would (targets, permissions, variables) before
    anything starts, so a bad value fails now, not half-way."""
    run_servers = list(dict.fromkeys(data.server_ids or sop.server_ids))
    production: set[str] = set()
    for index, step in enumerate(sop.steps):
        if step["type"] == "restore":
            if not principal.can("execute:restores"):
                raise Forbidden(f"step {index + 1} restores a backup: that needs execute:restores")
            if not run_servers:
                raise InvalidInput(f"step {index + 1} ({step['name']}) needs a source server")
            target = await get_readable(
                session, Server, step["target_server_id"], principal, name="Server"
            )
            if target.environment == "production":
                production.add(target.name)
            continue
        if step["type"] == "rotate_password":
            if not principal.can("write:servers"):
                raise Forbidden(
                    f"step {index + 1} changes servers' stored credentials: that needs "
                    "write:servers"
                )
            ids = step_targets(step, run_servers)
            if not ids:
                raise InvalidInput(
                    f"step {index + 1} ({step['name']}) has no target: give server_ids"
                )
            targets = await commands.resolve_targets(
                session, principal, sop.team_id, ExecuteRequest(server_ids=ids)
            )
            for server in targets:
                engine = server.type if server.type in ENGINES else server.db_engine
                if engine not in ENGINES:
                    raise InvalidInput(
                        f"step {index + 1} rotates a database password, but {server.name} has "
                        "no PostgreSQL or MySQL database (set db_engine on a host)"
                    )
            production |= {s.name for s in targets if s.environment == "production"}
            continue
        if step["type"] != "command":
            continue
        cmd = await commands.get_command(session, principal, step["command_id"])
        ids = step_targets(step, run_servers)
        if not ids:
            raise InvalidInput(f"step {index + 1} ({step['name']}) has no target: give server_ids")
        servers = await commands.resolve_targets(
            session, principal, sop.team_id, ExecuteRequest(server_ids=ids)
        )
        for server in servers:
            commands.check_runnable(principal, cmd, server)
        commands.render_for(cmd, servers, step.get("variables") or {})
        production |= {s.name for s in servers if s.environment == "production"}
    if production and data.confirm != sop.name:
        raise InvalidInput(
            f"production targets ({', '.join(sorted(production))}): set confirm to the "
            f"runbook's name ({sop.name!r}) to run it"
        )
    run = SopRun(
        team_id=sop.team_id,
        sop_id=sop.id,
        sop_name=sop.name,
        version=sop.version,
        status="running",
        server_ids=run_servers,
        requested_by=principal.username,
        requested_by_id=principal.user_id or None,
        started_at=utcnow(),
    )
    session.add(run)
    await session.flush()
    for position, step in enumerate(sop.steps):
        session.add(
            SopStepRun(
                run_id=run.id,
                position=position,
                name=step["name"],
                type=step["type"],
                definition=step,
            )
        )
    job = await advance_job(session, principal, run)
    return run, job


async def advance_job(session: AsyncSession, principal: Principal, run: SopRun) -> Job:
    """A job that takes the run as far as it goes without a person (one at a time)."""
    job = await jobs.create_job(
        session,
        principal,
        kind=JOB_KIND,
        team_id=run.team_id,
        lock_key=f"sop_run:{run.id}",
        resource_type="sop_run",
        resource_id=run.id,
        params={"run_id": run.id},
    )
    run.job_id = job.id
    await session.flush()
    return job


def requester(run: SopRun) -> Principal:
    """Who a run's commands run as: checked when the run started, recorded by name."""
    return replace(SYSTEM, user_id=run.requested_by_id or 0, username=run.requested_by)


def runs_query(principal: Principal, sop_id: int | None = None) -> Select[SopRun]:
    stmt = readable(select(SopRun), SopRun, principal).order_by(SopRun.id.desc())
    if sop_id is not None:
        stmt = stmt.where(SopRun.sop_id == sop_id)
    return stmt


async def step_runs(session: AsyncSession, run_id: int) -> list[SopStepRun]:
    rows = await session.scalars(
        select(SopStepRun).where(SopStepRun.run_id == run_id).order_by(SopStepRun.position)
    )
    return list(rows.all())


async def get_run(
    session: AsyncSession, principal: Principal, run_id: int
) -> tuple[SopRun, list[SopStepRun]]:
    run = await get_readable(session, SopRun, run_id, principal, name="SOP execution")
    return run, await step_runs(session, run.id)


def run_out(run: SopRun, steps: list[SopStepRun] | None = None) -> SopRunOut:
    out = SopRunOut.model_validate(run)
    out.steps = [StepRunOut.model_validate(s) for s in steps or []]
    return out


def _waiting_step(run: SopRun, steps: list[SopStepRun], position: int, kind: str) -> SopStepRun:
    if run.status in TERMINAL:
        raise Conflict(f"Run {run.id} already ended ({run.status})")
    step = next((s for s in steps if s.position == position), None)
    if step is None:
        raise NotFound("Step", position)
    if step.type != kind:
        raise Conflict(f"Step {position} is a {step.type} step, not {kind}")
    if step.status != "waiting" or run.current_step != position:
        raise Conflict(f"Step {position} is not waiting for this (it is {step.status})")
    if run.paused:
        raise Conflict(f"Run {run.id} is paused; resume it first")
    return step


def _done(step: SopStepRun, principal: Principal, status: str, note: str | None) -> None:
    step.status = status
    step.actor = principal.username
    step.actor_id = principal.user_id or None
    step.note = note
    step.completed_at = utcnow()


async def complete_manual(
    session: AsyncSession, principal: Principal, run_id: int, position: int, note: str | None
) -> tuple[SopRun, list[SopStepRun], Job]:
    run, steps = await get_run(session, principal, run_id)
    step = _waiting_step(run, steps, position, "manual")
    _done(step, principal, "completed", note)
    run.status = "running"
    job = await advance_job(session, principal, run)
    return run, steps, job


async def decide_approval(
    session: AsyncSession,
    principal: Principal,
    run_id: int,
    position: int,
    note: str | None,
    *,
    approve: bool,
) -> tuple[SopRun, list[SopStepRun], Job | None]:
    run, steps = await get_run(session, principal, run_id)
    step = _waiting_step(run, steps, position, "approval")
    role = step.definition.get("approver_role", "admin")
    if run.requested_by_id is not None and principal.user_id == run.requested_by_id:
        raise Forbidden(
            "You started this run, so you cannot approve it yourself; "
            f"ask another user with the role {role!r}"
        )
    if principal.role != role:
        raise Forbidden(f"This step needs a user with the role {role!r} to decide it")
    if approve:
        _done(step, principal, "completed", note)
        run.status = "running"
        return run, steps, await advance_job(session, principal, run)
    _done(step, principal, "failed", note)
    step.outputs = {"rejected": True}
    run.status = "failed"
    run.error = f"step {position} ({step.name}) was rejected by {principal.username}"
    run.completed_at = utcnow()
    return run, steps, None


async def pause(session: AsyncSession, principal: Principal, run_id: int) -> SopRun:
    run, _ = await get_run(session, principal, run_id)
    if run.status not in ("running", "waiting"):
        raise Conflict(f"Run {run.id} is {run.status}; only a running or waiting run pauses")
    run.paused = True
    if run.status == "waiting":
        run.status = "paused"  # a running step finishes first; then the run stops
    await session.flush()
    return run


async def resume(session: AsyncSession, principal: Principal, run_id: int) -> tuple[SopRun, Job]:
    run, _ = await get_run(session, principal, run_id)
    if not run.paused:
        raise Conflict(f"Run {run.id} is not paused")
    if run.status in TERMINAL:
        raise Conflict(f"Run {run.id} already ended ({run.status})")
    run.paused = False
    run.status = "running"
    return run, await advance_job(session, principal, run)


async def cancel(
    session: AsyncSession, principal: Principal, run_id: int
) -> tuple[SopRun, Job | None]:
    run, steps = await get_run(session, principal, run_id)
    if run.status in TERMINAL:
        raise Conflict(f"Run {run.id} already ended ({run.status})")
    run.status = "cancelled"
    run.completed_at = utcnow()
    for step in steps:
        if step.status in ("pending", "waiting", "running"):
            step.status = "cancelled"
    job = await session.get(Job, run.job_id) if run.job_id else None
    if job is not None and job.status in ("queued", "running"):
        jobs.request_cancel(job)
        return run, job
    return run, None
