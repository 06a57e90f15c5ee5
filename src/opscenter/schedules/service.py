"""Schedules: one cron expression in one timezone per backup target; manual and
scheduled runs. (A backup job of seed 000 and a backup policy of seed 002.)"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import cron_descriptor
from pydantic import ValidationError
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.audit import service as audit
from opscenter.backups import service as backups
from opscenter.backups.schemas import BackupCreate
from opscenter.core import cron
from opscenter.core.clock import utcnow
from opscenter.core.errors import AppError, Conflict, InvalidInput, NotFound
from opscenter.core.hostfiles import HostFiles
from opscenter.core.principal import SYSTEM, Principal
from opscenter.core.scoping import get_readable, readable
from opscenter.models import Backup, Job, JobStatus, Schedule, ScheduleRun, Server
from opscenter.retention import service as retention
from opscenter.schedules.schemas import (
    CronPreview,
    RunRequest,
    ScheduleCreate,
    ScheduleOut,
    ScheduleRunOut,
    ScheduleUpdate,
)
from opscenter.servers import service as servers

IDEMPOTENCY_WINDOW = timedelta(hours=24)
MISSED_CAP = 10_000
ACTIVE_JOB = (JobStatus.QUEUED, JobStatus.RUNNING)
SCHEDULER_NAME = "system (scheduler)"
_SEED000 = ("schedule_type", "schedule_time", "day_of_week", "day_of_month")
RESTORE_TEST_ENGINES = ("postgresql", "mysql")


# -- rendering and queries ------------------------------------------------------------------
def schedule_out(schedule: Schedule) -> ScheduleOut:
    simple = cron.to_simple(schedule.cron_expression)
    return ScheduleOut(
        id=schedule.id,
        team_id=schedule.team_id,
        name=schedule.name,
        description=schedule.description,
        server_id=schedule.server_id,
        database_name=schedule.database_name,
        source_path=schedule.source_path,
        db_type=schedule.db_type,
        cron_expression=schedule.cron_expression,
        timezone=schedule.timezone,
        schedule_type=simple.schedule_type if simple else "custom",
        schedule_time=simple.schedule_time if simple else None,
        day_of_week=simple.day_of_week if simple else None,
        day_of_month=simple.day_of_month if simple else None,
        backup_type=schedule.backup_type,
        retention_policy_id=schedule.retention_policy_id,
        retention_days=schedule.retention_days,
        storage_ids=list(schedule.storage_ids),
        parallel_streams=schedule.parallel_streams,
        priority=schedule.priority,
        enabled=schedule.enabled,
        is_active=schedule.enabled,
        notify_on_success=schedule.notify_on_success,
        notify_on_failure=schedule.notify_on_failure,
        misfire_policy=schedule.misfire_policy,
        verify_after=schedule.verify_after,
        restore_test_every_days=schedule.restore_test_every_days,
        restore_test_server_id=schedule.restore_test_server_id,
        last_restore_test_at=schedule.last_restore_test_at,
        last_run=schedule.last_run,
        next_run=schedule.next_run,
        created_at=schedule.created_at,
        updated_at=schedule.updated_at,
    )


def run_out(run: ScheduleRun) -> ScheduleRunOut:
    return ScheduleRunOut.model_validate(run)


def schedules_query(principal: Principal) -> Select[Any]:
    return readable(select(Schedule), Schedule, principal).order_by(Schedule.id)


def filter_schedules(
    stmt: Select[Any], *, server_id: int | None, enabled: bool | None, q: str | None
) -> Select[Any]:
    if server_id is not None:
        stmt = stmt.where(Schedule.server_id == server_id)
    if enabled is not None:
        stmt = stmt.where(Schedule.enabled.is_(enabled))
    if q:
        stmt = stmt.where(func.lower(Schedule.name).contains(q.lower(), autoescape=True))
    return stmt


async def get_schedule(session: AsyncSession, principal: Principal, schedule_id: int) -> Schedule:
    return await get_readable(session, Schedule, schedule_id, principal, name="Schedule")


async def executions_query(
    session: AsyncSession, principal: Principal, schedule_id: int
) -> Select[Any]:
    """The schedule's backups, newest first."""
    schedule = await get_schedule(session, principal, schedule_id)
    return backups.backups_query(principal).where(Backup.schedule_id == schedule.id)


async def runs_query(session: AsyncSession, principal: Principal, schedule_id: int) -> Select[Any]:
    schedule = await get_schedule(session, principal, schedule_id)
    return (
        select(ScheduleRun)
        .where(ScheduleRun.schedule_id == schedule.id)
        .order_by(ScheduleRun.id.desc())
    )


# -- create, update, delete -----------------------------------------------------------------
def backup_request(schedule: Schedule, backup_type: str | None = None) -> BackupCreate:
    """The backup a run of this schedule makes: one dump, written to every one of its
    storages (the first holds the primary, the others copies)."""
    try:
        return BackupCreate(
            server_id=schedule.server_id,
            database_name=schedule.database_name,
            source_path=schedule.source_path,
            db_type=schedule.db_type,
            backup_type=backup_type or schedule.backup_type,
            storage_ids=list(schedule.storage_ids) or None,
            parallel_streams=schedule.parallel_streams,
        )
    except ValidationError as err:  # e.g. more storages than a backup takes, stored earlier
        raise InvalidInput(err.errors()[0]["msg"]) from None


def _check_target(server: Server, schedule: Schedule) -> None:
    """The same checks a backup of this target gets, now rather than at 02:00."""
    request = backup_request(schedule)
    engine = backups.engine_for(server, request)
    backups.check_target(server, engine, request.target)
    backups.check_parallel_streams(engine, request.parallel_streams)
    if schedule.restore_test_every_days is not None and engine not in RESTORE_TEST_ENGINES:
        raise InvalidInput(
            f"Restore tests need a PostgreSQL or MySQL target (this one is {engine}); "
            "use verify_after 'deep' instead"
        )


async def _check_sandbox(
    session: AsyncSession, principal: Principal, server: Server, schedule: Schedule
) -> None:
    """The restore-test server must be one this schedule's backups can be restored into."""
    if schedule.restore_test_server_id is None:
        return
    try:
        sandbox = await servers.get_server(session, principal, schedule.restore_test_server_id)
    except NotFound:
        raise InvalidInput(
            f"restore_test_server_id {schedule.restore_test_server_id}: no such server"
        ) from None
    engine = backups.engine_for(server, backup_request(schedule))
    if sandbox.team_id != schedule.team_id:
        raise InvalidInput("The restore-test server must belong to the schedule's team")
    if not backups.can_restore_into(sandbox, engine):
        raise InvalidInput(
            f"A {engine} backup cannot be restore-tested on {sandbox.name} ({sandbox.type})"
        )


async def _check_storages(
    session: AsyncSession, principal: Principal, team_id: int, storage_ids: list[int]
) -> None:
    await backups.check_storages(session, principal, team_id, storage_ids)


async def _check_policy(
    session: AsyncSession, principal: Principal, team_id: int, policy_id: int
) -> None:
    policy = await retention.get_policy(session, principal, policy_id)
    if policy.team_id != team_id:
        raise InvalidInput(f"Retention policy {policy_id} belongs to another team")


async def _ensure_unique_name(
    session: AsyncSession, team_id: int, name: str, exclude: int | None = None
) -> None:
    stmt = select(Schedule.id).where(
        Schedule.team_id == team_id, func.lower(Schedule.name) == func.lower(name)
    )
    if exclude is not None:
        stmt = stmt.where(Schedule.id != exclude)
    if await session.scalar(stmt.limit(1)) is not None:
        raise Conflict(f"A schedule named '{name}' already exists in this team")


def _next_run(schedule: Schedule, after: datetime) -> datetime | None:
    if not schedule.enabled:
        return None
    return cron.next_after(schedule.cron_expression, cron.zone(schedule.timezone), after)


def preview(expr: str, timezone: str, count: int, after: datetime) -> CronPreview:
    """The next `count` runs of an expression (already validated) and its description."""
    tz = cron.zone(timezone)
    runs: list[datetime] = []
    moment: datetime | None = after
    while moment is not None and len(runs) < count:
        moment = cron.next_after(expr, tz, moment)
        if moment is not None:
            runs.append(moment)
    return CronPreview(
        cron_expression=expr,
        timezone=timezone,
        description=cron_descriptor.get_description(expr),
        next_runs=runs,
    )


async def create_schedule(
    session: AsyncSession,
    principal: Principal,
    data: ScheduleCreate,
    *,
    files: HostFiles,
    now: datetime | None = None,
) -> Schedule:
    now = now or utcnow()
    if data.server_id is not None:
        server = await servers.get_server(session, principal, data.server_id)
    elif data.source_path is not None:  # seed 000's job: a path of this host
        server = await servers.this_host(session, principal)
        if servers.allow_on_this_host(principal, files, server, data.source_path):
            await audit.record(
                session,
                action="server.update",
                actor=principal,
                resource_type="server",
                resource_id=server.id,
                details={"paths_added": [data.source_path], "for": "schedule.create"},
            )
    else:
        raise InvalidInput("Give server_id: the server whose database this schedule backs up")
    if data.cron_expression is not None:
        expression = data.cron_expression
    else:
        assert data.schedule_type is not None and data.schedule_time is not None
        expression = cron.from_simple(
            cron.Simple(data.schedule_type, data.schedule_time, data.day_of_week, data.day_of_month)
        )
    enabled = next((v for v in (data.enabled, data.is_active) if v is not None), True)
    schedule = Schedule(
        team_id=server.team_id,
        name=data.name,
        description=data.description,
        server_id=server.id,
        database_name=data.database_name,
        source_path=data.source_path,
        db_type=data.db_type,
        cron_expression=expression,
        timezone=data.timezone or "UTC",
        backup_type=data.backup_type,
        retention_policy_id=data.retention_policy_id,
        retention_days=data.retention_days,
        storage_ids=list(data.storage_ids or []),
        parallel_streams=data.parallel_streams,
        priority=data.priority,
        enabled=enabled,
        notify_on_success=data.notify_on_success,
        notify_on_failure=data.notify_on_failure,
        misfire_policy=data.misfire_policy,
        verify_after=data.verify_after,
        restore_test_every_days=data.restore_test_every_days,
        restore_test_server_id=data.restore_test_server_id,
        created_by=principal.user_id or None,
    )
    _check_target(server, schedule)
    await _check_sandbox(session, principal, server, schedule)
    await _check_storages(session, principal, server.team_id, schedule.storage_ids)
    if data.retention_policy_id is not None:
        await _check_policy(session, principal, server.team_id, data.retention_policy_id)
    await _ensure_unique_name(session, server.team_id, data.name)
    schedule.next_run = _next_run(schedule, now)
    session.add(schedule)
    await session.flush()
    return schedule


_NOT_NULL = frozenset(
    {
        "name",
        "description",
        "server_id",
        "backup_type",
        "priority",
        "parallel_streams",
        "enabled",
        "is_active",
        "notify_on_success",
        "notify_on_failure",
        "misfire_policy",
        "verify_after",
        "cron_expression",
        "timezone",
        "database_name",
        "source_path",
        *_SEED000,
    }
)
_PLAIN = (
    "name",
    "description",
    "db_type",
    "backup_type",
    "priority",
    "parallel_streams",
    "notify_on_success",
    "notify_on_failure",
    "misfire_policy",
    "verify_after",
    "restore_test_every_days",
    "restore_test_server_id",
)


def _new_expression(schedule: Schedule, data: ScheduleUpdate) -> str | None:
    """The cron expression the update asks for, or None when the time does not change."""
    if data.cron_expression is not None:
        return data.cron_expression
    if not any(getattr(data, f) is not None for f in _SEED000):
        return None
    current = cron.to_simple(schedule.cron_expression)
    kind = data.schedule_type or (current.schedule_type if current else None)
    at = data.schedule_time or (current.schedule_time if current else None)
    if kind is None or at is None:
        raise InvalidInput(
            "This schedule uses a custom cron expression: give cron_expression, or "
            "schedule_type and schedule_time"
        )
    if data.day_of_week is not None and kind != "weekly":
        raise InvalidInput("day_of_week applies to weekly schedules")
    if data.day_of_month is not None and kind != "monthly":
        raise InvalidInput("day_of_month applies to monthly schedules")
    dow, dom = data.day_of_week, data.day_of_month
    if current is not None and current.schedule_type == kind:  # keep the day not given
        dow = dow if dow is not None else current.day_of_week
        dom = dom if dom is not None else current.day_of_month
    return cron.from_simple(cron.Simple(kind, at, dow, dom))


async def update_schedule(
    session: AsyncSession,
    principal: Principal,
    schedule_id: int,
    data: ScheduleUpdate,
    *,
    now: datetime | None = None,
) -> tuple[Schedule, list[str]]:
    now = now or utcnow()
    schedule = await get_schedule(session, principal, schedule_id)
    given = data.model_fields_set
    for name in given & _NOT_NULL:
        if getattr(data, name) is None:
            raise InvalidInput(f"{name} cannot be null")
    changed: set[str] = set()

    def put(name: str, value: Any) -> None:
        if getattr(schedule, name) != value:
            setattr(schedule, name, value)
            changed.add(name)

    for name in _PLAIN:
        if name in given:
            put(name, getattr(data, name))
    server = await servers.get_server(session, principal, data.server_id or schedule.server_id)
    if server.team_id != schedule.team_id:
        raise InvalidInput("A schedule cannot move to another team's server")
    put("server_id", server.id)
    if data.database_name is not None:
        put("database_name", data.database_name)
        put("source_path", None)
    elif data.source_path is not None:
        put("source_path", data.source_path)
        put("database_name", None)
    expression = _new_expression(schedule, data)
    if expression is not None:
        put("cron_expression", expression)
    if data.timezone is not None:
        put("timezone", data.timezone)
    if "storage_ids" in given:
        ids = list(data.storage_ids or [])
        await _check_storages(session, principal, schedule.team_id, ids)
        put("storage_ids", ids)
    if "retention_policy_id" in given:
        if data.retention_policy_id is not None:
            await _check_policy(session, principal, schedule.team_id, data.retention_policy_id)
            put("retention_days", None)
        put("retention_policy_id", data.retention_policy_id)
    if "retention_days" in given:
        if data.retention_days is not None:
            put("retention_policy_id", None)
        put("retention_days", data.retention_days)
    enabled = next((v for v in (data.enabled, data.is_active) if v is not None), None)
    if enabled is not None:
        put("enabled", enabled)
    if changed & {"cron_expression", "timezone", "enabled"}:
        schedule.next_run = _next_run(schedule, now)
    if changed & {
        "server_id",
        "database_name",
        "source_path",
        "db_type",
        "backup_type",
        "parallel_streams",
        "restore_test_every_days",
    }:
        _check_target(server, schedule)
    if changed & {"server_id", "database_name", "source_path", "db_type", "restore_test_server_id"}:
        await _check_sandbox(session, principal, server, schedule)
    if "name" in changed:
        await _ensure_unique_name(session, schedule.team_id, schedule.name, schedule.id)
    await session.flush()
    return schedule, sorted(changed)


async def delete_schedule(
    session: AsyncSession, principal: Principal, schedule_id: int
) -> Schedule:
    """Its runs go with it; its backups stay (they outlive the schedule, as they do a server)."""
    schedule = await get_schedule(session, principal, schedule_id)
    await session.delete(schedule)
    await session.flush()
    return schedule


# -- runs -------------------------------------------------------------------------------------
async def active_job(session: AsyncSession, schedule_id: int) -> int | None:
    """The job of a run of this schedule that is still queued or running, if any."""
    return (await active_jobs(session, [schedule_id])).get(schedule_id)


async def active_jobs(session: AsyncSession, schedule_ids: Sequence[int]) -> dict[int, int]:
    """Per schedule with a run still queued or running, that run's job (the oldest)."""
    found = await session.execute(
        select(ScheduleRun.schedule_id, func.min(Job.id))
        .join(Job, ScheduleRun.job_id == Job.id)
        .where(ScheduleRun.schedule_id.in_(schedule_ids), Job.status.in_(ACTIVE_JOB))
        .group_by(ScheduleRun.schedule_id)
    )
    return {schedule_id: job_id for schedule_id, job_id in found}


async def _locked(session: AsyncSession, principal: Principal, schedule_id: int) -> Schedule:
    """The schedule with its row locked (PostgreSQL; SQLite writers are serialised anyway),
    so runs of one schedule are decided one at a time, across processes."""
    schedule: Schedule | None = await session.scalar(
        readable(select(Schedule), Schedule, principal)
        .where(Schedule.id == schedule_id)
        .with_for_update()
    )
    if schedule is None:
        raise NotFound("Schedule", schedule_id)
    return schedule


def request_hash(body: RunRequest) -> str:
    canonical = json.dumps(body.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class ManualRun:
    run: ScheduleRun
    replayed: bool
    status: str  # the backup's status now


async def run_now(
    session: AsyncSession,
    principal: Principal,
    schedule_id: int,
    body: RunRequest,
    *,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> ManualRun:
    """Seed 000's manual trigger: a backup now, as the caller. With an idempotency key,
    a retry within 24 hours gets the same run back instead of a second backup."""
    now = now or utcnow()
    schedule = await _locked(session, principal, schedule_id)
    digest = request_hash(body)
    if idempotency_key is not None:
        earlier = await session.scalar(
            select(ScheduleRun).where(
                ScheduleRun.schedule_id == schedule.id,
                ScheduleRun.idempotency_key == idempotency_key,
            )
        )
        if earlier is not None and earlier.created_at > now - IDEMPOTENCY_WINDOW:
            if earlier.request_hash != digest:
                raise Conflict("This Idempotency-Key was used with a different request body")
            backup = await session.get(Backup, earlier.backup_id) if earlier.backup_id else None
            if backup is None or earlier.job_id is None:
                raise Conflict("The run of this Idempotency-Key no longer has its backup")
            return ManualRun(earlier, True, backup.status)
        if earlier is not None:  # expired: the key is free again
            earlier.idempotency_key = None
            await session.flush()
    busy = await active_job(session, schedule.id)
    if busy is not None:
        raise Conflict(
            f"Schedule {schedule.id} already has a run in progress (job {busy}); "
            "a schedule never runs twice at once"
        )
    backup, job = await backups.create_backup(
        session, principal, backup_request(schedule, body.backup_type), schedule_id=schedule.id
    )
    run = ScheduleRun(
        schedule_id=schedule.id,
        team_id=schedule.team_id,
        scheduled_for=None,
        trigger="manual",
        status="started",
        notify=body.notify,
        backup_id=backup.id,
        job_id=job.id,
        idempotency_key=idempotency_key,
        request_hash=digest if idempotency_key is not None else None,
        created_by=principal.user_id or None,
    )
    session.add(run)
    schedule.last_run = now
    await session.flush()
    return ManualRun(run, False, backup.status)


@dataclass(frozen=True)
class Fired:
    schedule_id: int
    run_id: int
    scheduled_for: datetime
    trigger: str
    status: str  # started | skipped | failed
    reason: str | None
    job_id: int | None
    backup_id: int | None


async def fire_due(
    session: AsyncSession,
    schedule_ids: Sequence[int],
    now: datetime,
    *,
    grace: timedelta,
    skip_locked: bool = False,
) -> list[Fired]:
    """Run the due slots of these schedules, in the order given, in the caller's
    transaction: a scheduler round writes all its runs, backups, jobs and audit entries
    with one statement per kind of row. Each schedule's row is locked (in id order, so two
    processes firing at once never deadlock) and its slot fired only if still due; with
    `skip_locked`, a schedule whose row another transaction holds is left out (PostgreSQL).

    The INSERT of a run claims its slot: a second claim of a (schedule, slot) raises
    IntegrityError at the flush, and the caller rolls back and fires slot by slot.
    Misfires (the slot is older than `grace`, or later slots passed too) become one
    coalesced catch-up run, or a skipped one with misfire_policy 'skip'."""
    locked = await session.scalars(
        select(Schedule)
        .where(Schedule.id.in_(schedule_ids))
        .order_by(Schedule.id)
        .with_for_update(skip_locked=skip_locked)
    )
    by_id = {schedule.id: schedule for schedule in locked}
    due = [
        (schedule, schedule.next_run)
        for schedule in (by_id.get(schedule_id) for schedule_id in schedule_ids)
        if schedule is not None
        and schedule.enabled
        and schedule.next_run is not None
        and schedule.next_run <= now
    ]
    if not due:
        return []
    busy = await active_jobs(session, [schedule.id for schedule, _ in due])
    # Each run with its schedule, its slot and the schedule's next slot.
    runs: list[tuple[Schedule, ScheduleRun, datetime, datetime | None]] = []
    plans: dict[int, backups.PlannedBackup] = {}
    for schedule, slot in due:
        zone = cron.zone(schedule.timezone)
        missed = cron.count_between(schedule.cron_expression, zone, slot, now, MISSED_CAP)
        late = missed > 0 or now - slot > grace
        run = ScheduleRun(
            schedule_id=schedule.id,
            team_id=schedule.team_id,
            scheduled_for=slot,
            trigger="catch_up" if late else "scheduled",
            status="started",
            missed=missed,
        )
        if late and schedule.misfire_policy == "skip":
            run.status = "skipped"
            run.reason = (
                f"missed by {int((now - slot).total_seconds())} s while opscenter was not "
                "running; misfire_policy is 'skip'"
            )
        elif schedule.id in busy:
            run.status = "skipped"
            run.reason = f"the previous run (job {busy[schedule.id]}) is still queued or running"
        else:
            try:
                plans[schedule.id] = await backups.plan_backup(
                    session, SYSTEM, backup_request(schedule), schedule_id=schedule.id
                )
            except AppError as err:
                run.status = "failed"
                run.reason = err.detail[:2000]
        next_run = cron.next_after(schedule.cron_expression, zone, max(now, slot))
        runs.append((schedule, run, slot, next_run))
    added = await backups.add_backups(session, SYSTEM, list(plans.values()))
    made = dict(zip(plans, added, strict=True))
    # The schedules change only now: a change before the planning's queries would be
    # flushed by each of them, an UPDATE per schedule instead of one for all.
    for schedule, run, _, next_run in runs:
        schedule.next_run = next_run
        if schedule.id in made:
            backup, job = made[schedule.id]
            run.backup_id, run.job_id = backup.id, job.id
            schedule.last_run = now
    session.add_all([run for _, run, _, _ in runs])
    await audit.append(
        session,
        [
            audit.Entry(
                action="schedule.run",
                username=SCHEDULER_NAME,
                resource_type="schedule",
                resource_id=run.schedule_id,
                team_id=run.team_id,
                outcome="failure" if run.status == "failed" else "success",
                details={
                    "scheduled_for": slot.isoformat(),
                    "trigger": run.trigger,
                    "status": run.status,
                    "reason": run.reason,
                    "missed": run.missed,
                    "backup_id": run.backup_id,
                    "job_id": run.job_id,
                },
            )
            for _, run, slot, _ in runs
        ],
    )
    return [
        Fired(
            schedule_id=run.schedule_id,
            run_id=run.id,
            scheduled_for=slot,
            trigger=run.trigger,
            status=run.status,
            reason=run.reason,
            job_id=run.job_id,
            backup_id=run.backup_id,
        )
        for _, run, slot, _ in runs
    ]


async def pass_claimed(session: AsyncSession, schedule_id: int, now: datetime) -> None:
    """After a lost claim: if next_run still points at the slot another run holds (a clock
    that went back, a stale copy), move it on, so the schedule does not retry it forever."""
    schedule = await _locked(session, SYSTEM, schedule_id)
    if schedule.enabled and schedule.next_run is not None and schedule.next_run <= now:
        schedule.next_run = cron.next_after(
            schedule.cron_expression, cron.zone(schedule.timezone), now
        )
        await session.flush()
