"""The scheduler loop: run the schedules whose next_run has come, at their slot's time (a
round sleeps until the earliest next slot, at most `interval` seconds: schedules made or
changed meanwhile, by any process, are seen within an interval).

Safe with any number of processes on one database: each due slot is claimed by INSERTing
its `schedule_runs` row (UNIQUE schedule_id + scheduled_for) in the transaction that
creates the backup and its job and advances next_run, with the schedule's row locked.
Whoever loses the race finds the slot no longer due, or gets the IntegrityError, and
skips it. Jobs reach the runner only after that transaction commits. A round fires its
due slots together, up to 50 per transaction (one statement per kind of row for them all);
if that transaction fails, it fires them one by one, so one bad slot holds up no other.

Misfires: after downtime, a schedule whose slots passed gets ONE coalesced catch-up run
(trigger `catch_up`, `missed` = how many later slots it stands for), then resumes at its
next future slot; with misfire_policy 'skip' the missed slot is recorded as skipped.

Restore tests: every round, the schedules with `restore_test_every_days` whose period has
passed get a restore test of their newest completed backup (verify.automatic).

Retention: once a day (and after every successful backup of a schedule, from the backup
job's finisher) every schedule's policy is applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.db import Database
from opscenter.core.events import Event
from opscenter.core.logging import get_logger
from opscenter.models import Schedule
from opscenter.retention import service as retention
from opscenter.schedules import service
from opscenter.schedules.service import Fired
from opscenter.verify import automatic as verify_automatic

log = get_logger("opscenter.scheduler")
RETENTION_EVERY = timedelta(days=1)
MIN_GRACE = timedelta(minutes=5)
SLOTS_PER_TRANSACTION = 50  # slots per transaction: a round at 03:00 may find thousands due


class Scheduler:
    def __init__(
        self,
        app: AppContext,
        *,
        db: Database | None = None,
        interval_seconds: float | None = None,
        submit: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.db = db or app.db
        self.interval = (
            app.settings.scheduler_interval_seconds
            if interval_seconds is None
            else interval_seconds
        )
        self.submit = submit or app.runner.submit
        # A slot later than this counts as missed (a tick may come up to one interval late).
        self.grace = max(MIN_GRACE, timedelta(seconds=2 * self.interval))
        self.last_retention: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    # -- one round ---------------------------------------------------------------------------
    async def tick(
        self, now: datetime | None = None, *, schedule_ids: Collection[int] | None = None
    ) -> list[Fired]:
        """Run every due schedule once. `now` is injectable (tests); `schedule_ids` limits
        the round to some schedules."""
        now = now or utcnow()
        stmt = (
            select(Schedule.id)
            .where(Schedule.enabled.is_(True), Schedule.next_run <= now)
            .order_by(Schedule.priority.desc(), Schedule.next_run, Schedule.id)
        )
        if schedule_ids is not None:
            stmt = stmt.where(Schedule.id.in_(list(schedule_ids)))
        async with self.db.read_session() as session:
            due = list((await session.scalars(stmt)).all())
        fired: list[Fired] = []
        for start in range(0, len(due), SLOTS_PER_TRANSACTION):
            fired += await self._fire(due[start : start + SLOTS_PER_TRANSACTION], now)
        return fired

    async def _fire(self, schedule_ids: list[int], now: datetime) -> list[Fired]:
        """Fire these slots in one transaction, passing over any whose schedule row another
        transaction holds (another process deciding its run); then those, one by one and
        waiting for their lock. If the transaction fails, all one by one, so a slot that
        cannot be fired (claimed elsewhere, a broken schedule) holds up no other."""
        try:
            async with self.db.write_session() as session:
                fired = await service.fire_due(
                    session, schedule_ids, now, grace=self.grace, skip_locked=True
                )
                await session.commit()
        except Exception:
            log.warning("firing slots together failed; firing them one by one", exc_info=True)
            fired = []
        self._hand_over(fired)
        done = {result.schedule_id for result in fired}
        for schedule_id in schedule_ids:
            if schedule_id not in done:
                alone = await self._fire_one(schedule_id, now)
                self._hand_over(alone)
                fired += alone
        for result in fired:
            if result.trigger == "catch_up":
                await self._announce_missed(result)
        return fired

    def _hand_over(self, fired: list[Fired]) -> None:
        for result in fired:
            if result.job_id is not None:
                self.submit(result.job_id)

    async def _fire_one(self, schedule_id: int, now: datetime) -> list[Fired]:
        try:
            async with self.db.write_session() as session:
                try:
                    fired = await service.fire_due(session, [schedule_id], now, grace=self.grace)
                except IntegrityError:
                    await session.rollback()
                    log.info("slot already claimed elsewhere", schedule_id=schedule_id)
                    await service.pass_claimed(session, schedule_id, now)
                    await session.commit()
                    return []
                await session.commit()
        except Exception:
            log.exception("schedule run failed", schedule_id=schedule_id)
            return []
        return fired

    async def _announce_missed(self, fired: Fired) -> None:
        """`schedule.missed`: a slot passed while nothing ran it (downtime)."""
        async with self.db.read_session() as session:
            schedule = await session.get(Schedule, fired.schedule_id)
        if schedule is None:
            return
        what = "ran late as a catch-up" if fired.status == "started" else f"was {fired.status}"
        self.app.events.publish(
            Event(
                "schedule.missed",
                {
                    "schedule_id": schedule.id,
                    "schedule": schedule.name,
                    "server_id": schedule.server_id,
                    "database_name": schedule.database_name,
                    "scheduled_for": fired.scheduled_for.isoformat(),
                    "status": fired.status,
                    "reason": fired.reason,
                    "severity": "warning",
                    "message": f"Schedule {schedule.name}: the run due at "
                    f"{fired.scheduled_for:%Y-%m-%d %H:%M} UTC {what}",
                },
                team_id=schedule.team_id,
            )
        )

    async def retention_pass(
        self, now: datetime | None = None, *, schedule_ids: Collection[int] | None = None
    ) -> None:
        """The daily pass: apply every schedule's retention policy."""
        now = now or utcnow()
        self.last_retention = now
        await retention.daily_pass(self.app, now, schedule_ids=schedule_ids)

    async def restore_test_pass(
        self, now: datetime | None = None, *, schedule_ids: Collection[int] | None = None
    ) -> list[int]:
        """Queue the restore tests that schedules' `restore_test_every_days` make due."""
        return await verify_automatic.restore_test_pass(self.app, now, schedule_ids=schedule_ids)

    # -- the loop ----------------------------------------------------------------------------
    async def pause(self, round_started: datetime) -> float:
        """Seconds until the next round: until the earliest slot after the ones this round
        saw, at most `interval` (a slot that is still due, its run failed, waits for a later
        round, so one broken schedule neither spins the loop nor delays the others)."""
        async with self.db.read_session() as session:
            earliest = await session.scalar(
                select(func.min(Schedule.next_run)).where(
                    Schedule.enabled.is_(True), Schedule.next_run > round_started
                )
            )
        if earliest is None:
            return self.interval
        return min(self.interval, max(0.0, (earliest - utcnow()).total_seconds()))

    async def run_forever(self) -> None:
        while True:
            started = utcnow()
            pause = self.interval
            try:
                await self.tick(started)
                now = utcnow()
                if self.last_retention is None or now - self.last_retention >= RETENTION_EVERY:
                    await self.retention_pass(now)
                await self.restore_test_pass(now)
                pause = await self.pause(started)
            except Exception:
                log.exception("scheduler round failed")
            await asyncio.sleep(pause)

    async def start(self) -> None:
        """Start the loop (interval 0: disabled)."""
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self.run_forever(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
