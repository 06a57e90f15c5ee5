"""Verification a schedule asks for: a check of each new backup (`verify_after`), and a
restore test of its newest completed backup every `restore_test_every_days`."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import select

from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.errors import AppError
from opscenter.core.logging import get_logger
from opscenter.core.principal import SYSTEM
from opscenter.models import Backup, BackupStatus, JobStatus, Schedule, VerificationRun
from opscenter.verify import service
from opscenter.verify.schemas import VerifyRequest

log = get_logger("opscenter.verify")


async def after_backup(app: AppContext, backup_id: int, status: str) -> int | None:
    """From the backup job's finisher: queue the check the backup's schedule asks for.
    Returns the verify job's id, if one was queued."""
    if status != JobStatus.SUCCEEDED:
        return None
    async with app.db.write_session() as session:
        backup = await session.get(Backup, backup_id)
        if backup is None or backup.schedule_id is None:
            return None
        schedule = await session.get(Schedule, backup.schedule_id)
        if schedule is None or schedule.verify_after not in ("checksum", "deep"):
            return None
        try:
            _, job = await service.create_verification(
                session,
                SYSTEM,
                backup.id,
                VerifyRequest(test_type=schedule.verify_after),
                trigger="after_backup",
            )
        except AppError as err:  # e.g. the backup was deleted meanwhile
            log.warning("automatic verification not queued", backup_id=backup_id, why=err.detail)
            return None
        await session.commit()
    app.runner.submit(job.id)
    return job.id


async def restore_test_pass(
    app: AppContext,
    now: datetime | None = None,
    *,
    schedule_ids: Collection[int] | None = None,
) -> list[int]:
    """Queue a restore test of each due schedule's newest completed backup. The schedule's
    row is locked and `last_restore_test_at` advanced in the same transaction, so several
    scheduler processes queue one test. Returns the queued jobs' ids."""
    now = now or utcnow()
    stmt = select(Schedule.id).where(
        Schedule.enabled.is_(True), Schedule.restore_test_every_days.is_not(None)
    )
    if schedule_ids is not None:
        stmt = stmt.where(Schedule.id.in_(list(schedule_ids)))
    async with app.db.read_session() as session:
        due = (await session.scalars(stmt)).all()
    queued: list[int] = []
    for schedule_id in due:
        try:
            job_id = await _restore_test_of(app, schedule_id, now)
        except Exception:
            log.exception("scheduled restore test failed to queue", schedule_id=schedule_id)
            continue
        if job_id is not None:
            queued.append(job_id)
    return queued


async def _restore_test_of(app: AppContext, schedule_id: int, now: datetime) -> int | None:
    async with app.db.write_session() as session:
        schedule = await session.scalar(
            select(Schedule).where(Schedule.id == schedule_id).with_for_update()
        )
        if schedule is None or schedule.restore_test_every_days is None:
            return None
        every = timedelta(days=schedule.restore_test_every_days)
        if (
            schedule.last_restore_test_at is not None
            and now - schedule.last_restore_test_at < every
        ):
            return None
        backup = await session.scalar(
            select(Backup)
            .where(Backup.schedule_id == schedule.id, Backup.status == BackupStatus.COMPLETED)
            .order_by(Backup.created_at.desc(), Backup.id.desc())
            .limit(1)
        )
        if backup is None:
            return None  # nothing to test yet; try again next round
        busy = await session.scalar(
            select(VerificationRun.id).where(
                VerificationRun.backup_id == backup.id,
                VerificationRun.test_type == "restore",
                VerificationRun.status.in_(service.ACTIVE),
            )
        )
        schedule.last_restore_test_at = now
        if busy is not None:
            await session.commit()
            return None
        try:
            request = VerifyRequest(
                test_type="restore", target_server_id=schedule.restore_test_server_id
            )
            _, job = await service.create_verification(
                session, SYSTEM, backup.id, request, trigger="scheduled"
            )
        except AppError as err:
            log.warning("scheduled restore test refused", schedule_id=schedule_id, why=err.detail)
            await session.commit()  # keep last_restore_test_at: retry after the period
            return None
        await session.commit()
    app.runner.submit(job.id)
    return job.id
