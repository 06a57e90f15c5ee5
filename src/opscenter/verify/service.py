"""Verification runs: create (as a `verify` job), read, cancel, and the rules that turn
a run's outcome into the backup's `verification_status`."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from opscenter.backups import service as backups
from opscenter.core.errors import Conflict, InvalidInput, NotFound
from opscenter.core.principal import Principal
from opscenter.core.scoping import readable
from opscenter.jobs import service as jobs
from opscenter.models import Backup, BackupStatus, Job, JobStatus, VerificationRun
from opscenter.servers import service as servers
from opscenter.verify.schemas import (
    VerificationOut,
    VerificationStatusOut,
    VerifyRequest,
    comparison,
)

JOB_KIND = "verify"
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
RESTORE_ENGINES = ("postgresql", "mysql")
#: What a passed check proves, from weakest to strongest.
PASSED = {"checksum": "checksum_ok", "deep": "deep_ok", "restore": "restore_verified"}
RANK = {"unverified": 0, "checksum_ok": 1, "deep_ok": 2, "restore_verified": 3}
CORRUPT = "corrupt"
#: Failure codes that mean the artifact itself is damaged or gone. Anything else
#: (storage or sandbox unreachable, a tool missing, a restore the target refused) means
#: the check could not be made, and the backup's status stays as it was.
CORRUPTING = frozenset(backups.DAMAGE)


def status_after(current: str, test_type: str, outcome: str) -> str:
    """The backup's verification_status once a run ended with `outcome`.

    A passed check never downgrades (a restore-verified backup stays so after a later
    checksum). A corrupt backup is cleared only by a passing deep check or restore test,
    which read the whole dump; a matching checksum alone does not prove it sound."""
    if outcome == CORRUPT:
        return CORRUPT
    if outcome != "passed":
        return current
    proven = PASSED[test_type]
    if current == CORRUPT:
        return proven if test_type != "checksum" else CORRUPT
    return proven if RANK[proven] > RANK.get(current, 0) else current


def outcome_of(job_status: str, code: str | None) -> str:
    """The run's status from its job's end."""
    if job_status == JobStatus.SUCCEEDED:
        return "passed"
    if job_status == JobStatus.FAILED:
        return CORRUPT if code in CORRUPTING else "failed"
    return job_status  # cancelled | interrupted


def scratch_name(run_id: int) -> str:
    """Unique, and recognisable as ours on the server ("oc_verify_...")."""
    return f"oc_verify_{run_id}_{secrets.token_hex(4)}"


def run_out(run: VerificationRun, backup: Backup) -> VerificationOut:
    return VerificationOut(
        id=run.id,
        backup_id=run.backup_id,
        team_id=run.team_id,
        job_id=run.job_id,
        test_type=run.test_type,
        scope=run.scope,
        trigger=run.trigger,
        status=run.status,
        backup_verification_status=backup.verification_status,
        target_server_id=run.target_server_id,
        scratch_database=run.scratch_database,
        detail=run.detail,
        error_code=run.error_code,
        error_message=run.error_message,
        duration_seconds=run.duration_seconds,
        rto_seconds=run.rto_seconds,
        table_comparison=comparison(run.table_comparison),
        requested_by=run.requested_by,
        started_at=run.started_at,
        finished_at=run.finished_at,
        created_at=run.created_at,
    )


def status_out(run: VerificationRun, backup: Backup, job: Job | None) -> VerificationStatusOut:
    return VerificationStatusOut(
        id=run.id,
        backup_id=run.backup_id,
        test_type=run.test_type,
        status=run.status,
        phase=job.phase if job is not None else None,
        progress=100.0 if run.status == "passed" else (job.progress if job else None),
        bytes_done=job.bytes_done if job is not None else 0,
        backup_verification_status=backup.verification_status,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def runs_query(principal: Principal) -> Select[Any]:
    """Runs with their backup, newest first, in the caller's teams."""
    return (
        readable(select(VerificationRun), VerificationRun, principal)
        .join(Backup, Backup.id == VerificationRun.backup_id)
        .options(selectinload(VerificationRun.backup))
        .order_by(VerificationRun.id.desc())
    )


def filter_runs(
    stmt: Select[Any],
    *,
    backup_id: int | None = None,
    server_id: int | None = None,
    test_type: str | None = None,
    status: str | None = None,
) -> Select[Any]:
    if backup_id is not None:
        stmt = stmt.where(VerificationRun.backup_id == backup_id)
    if server_id is not None:
        stmt = stmt.where(Backup.server_id == server_id)
    if test_type:
        stmt = stmt.where(VerificationRun.test_type == test_type)
    if status:
        stmt = stmt.where(VerificationRun.status == status)
    return stmt


async def get_run(
    session: AsyncSession, principal: Principal, backup_id: int, run_id: int | None = None
) -> tuple[VerificationRun, Backup]:
    """One run of a backup: `run_id`, or its newest. A 404 names what is missing."""
    backup = await backups.get_backup(session, principal, backup_id)
    stmt = filter_runs(runs_query(principal), backup_id=backup.id)
    if run_id is not None:
        stmt = stmt.where(VerificationRun.id == run_id)
    run: VerificationRun | None = await session.scalar(stmt.limit(1))
    if run is None:
        if run_id is not None:
            raise NotFound(f"Verification run {run_id} of backup", backup_id)
        raise NotFound("Verification of backup", backup_id)
    # Read the backup's status again, after the run: a run and the status it gave the
    # backup are committed together, but on PostgreSQL (read committed) the backup read
    # before the run may predate that commit ("passed", yet "unverified").
    await session.refresh(backup, ["verification_status"])
    return run, backup


async def create_verification(
    session: AsyncSession,
    principal: Principal,
    backup_id: int,
    data: VerifyRequest,
    *,
    trigger: str = "manual",
) -> tuple[VerificationRun, Job]:
    backup = await backups.get_backup(session, principal, backup_id)
    if backup.status != BackupStatus.COMPLETED or not backup.storage_key:
        raise Conflict(f"Backup {backup_id} is {backup.status}; only completed backups verify")
    target_server_id: int | None = None
    if data.test_type == "restore":
        if backup.db_type not in RESTORE_ENGINES:
            raise InvalidInput(
                f"Restore tests need a PostgreSQL or MySQL backup (this one is "
                f"{backup.db_type}); use test_type 'deep'"
            )
        target_server_id = data.target_server_id or backup.server_id
        if target_server_id is None:
            raise InvalidInput("The backup's server was removed; give target_server_id")
        target = await servers.get_server(session, principal, target_server_id)
        if not backups.can_restore_into(target, backup.db_type):
            raise InvalidInput(
                f"A {backup.db_type} backup cannot be restored into a {target.type} server"
            )
    elif data.target_server_id is not None:
        raise InvalidInput("target_server_id applies to restore tests")
    run = VerificationRun(
        team_id=backup.team_id,
        backup_id=backup.id,
        test_type=data.test_type,
        scope=data.scope,
        trigger=trigger,
        status="queued",
        target_server_id=target_server_id,
        detail="",
        table_comparison=[],
        requested_by=principal.user_id or None,  # the scheduler and CLI act as user 0
    )
    session.add(run)
    await session.flush()
    if data.test_type == "restore":
        # Named now, so that even a run interrupted by a restart knows what to drop.
        run.scratch_database = scratch_name(run.id)
    job = await jobs.create_job(
        session,
        principal,
        kind=JOB_KIND,
        team_id=backup.team_id,
        # One check of a backup at a time; a deletion waits for it (same resource).
        lock_key=f"verify:backup:{backup.id}",
        resource_type="backup",
        resource_id=backup.id,
        params={"run_id": run.id, "backup_id": backup.id},
    )
    run.job_id = job.id
    await session.flush()
    return run, job


async def _named_for_cancel(
    session: AsyncSession, principal: Principal, ident: int
) -> tuple[int, int | None]:
    """(backup id, run id) that `/verify/{ident}/cancel` means: ours names the backup, seed
    000's the run. A running run of that id is meant, unless the backup of that id has
    another one running: then which is ambiguous."""
    active = runs_query(principal).where(VerificationRun.status.in_(ACTIVE)).limit(1)
    as_run = await session.scalar(active.where(VerificationRun.id == ident))
    if as_run is None:
        return ident, None
    of_backup = await session.scalar(filter_runs(active, backup_id=ident))
    if of_backup is not None and of_backup.id != as_run.id:
        raise Conflict(
            f"{ident} names both a running verification and a backup with another one "
            "running; give run_id"
        )
    return as_run.backup_id, as_run.id


async def cancel_run(
    session: AsyncSession, principal: Principal, backup_id: int, run_id: int | None
) -> tuple[VerificationRun, Backup, Job]:
    """Mark the run's job for cancellation (the caller signals the runner after commit)."""
    if run_id is None:
        backup_id, run_id = await _named_for_cancel(session, principal, backup_id)
    run, backup = await get_run(session, principal, backup_id, run_id)
    job = await session.get(Job, run.job_id) if run.job_id is not None else None
    if run.status not in ACTIVE or job is None or job.status not in ACTIVE:
        raise Conflict(f"Verification run {run.id} already ended ({run.status})")
    jobs.request_cancel(job)
    if job.status == "cancelled":  # it had not started: it ends now
        run.status = "cancelled"
        run.error_code = "cancelled"
        run.error_message = "cancelled before it started"
        run.finished_at = job.finished_at
    await session.flush()
    return run, backup, job


async def job_of(session: AsyncSession, run: VerificationRun) -> Job | None:
    return await session.get(Job, run.job_id) if run.job_id is not None else None
