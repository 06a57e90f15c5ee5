"""Retention policies: CRUD, a dry-run preview, and applying them to real backups.

Applying deletes in three steps, each safe to interrupt: the row is marked `deleting`
(committed, after re-checking the safety floor and that no job uses the backup), the
artifact and its manifest are removed from storage (absent objects are not an error),
then the row goes, audited as `retention.delete`. A pass that finds a `deleting` row
finishes it, so an interrupted deletion completes on the next pass.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.audit import service as audit
from opscenter.backups import service as backups
from opscenter.core import cron
from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext
from opscenter.core.db import Database
from opscenter.core.errors import AppError, Conflict, InvalidInput, NotFound
from opscenter.core.events import Event
from opscenter.core.logging import get_logger
from opscenter.core.principal import ALL_TEAMS, Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.models import (
    Backup,
    BackupStatus,
    JobStatus,
    RetentionPolicy,
    Schedule,
    StorageProvider,
    Team,
)
from opscenter.retention.rules import DELETING, Decision, Item, Rules, decide
from opscenter.retention.schemas import (
    RULES,
    RetainedBackup,
    RetentionApplied,
    RetentionPolicyCreate,
    RetentionPolicyOut,
    RetentionPolicyUpdate,
    RetentionPreview,
    RetentionScope,
)
from opscenter.servers import service as servers
from opscenter.storage.service import StoragePool
from opscenter.stores.backends import StorageError
from opscenter.streaming.manifest import delete_backup_objects

log = get_logger("opscenter.retention")
# A backup counts as verified once a check read its whole dump: deep_ok (decrypted,
# decompressed, parsed) or restore_verified. checksum_ok only proves the stored bytes are
# the ones written, not that the dump in them is complete, so it does not count.
VERIFIED = frozenset({"deep_ok", "restore_verified"})
# Retention acts for no user; it may look at every team's backups of the scope it is given.
RETENTION = Principal(
    user_id=0,
    username="system (retention)",
    role="admin",
    permissions=frozenset({ALL_TEAMS, "read:backups", "write:backups"}),
    team_ids=frozenset(),
)


# -- policies -------------------------------------------------------------------------------
def policy_out(policy: RetentionPolicy, schedule_ids: list[int]) -> RetentionPolicyOut:
    return RetentionPolicyOut(
        id=policy.id,
        team_id=policy.team_id,
        name=policy.name,
        description=policy.description,
        keep_last_n=policy.keep_last_n,
        keep_days=policy.keep_days,
        keep_daily=policy.keep_daily,
        keep_weekly=policy.keep_weekly,
        keep_monthly=policy.keep_monthly,
        keep_yearly=policy.keep_yearly,
        min_keep=policy.min_keep,
        schedule_ids=schedule_ids,
        created_at=policy.created_at,
        updated_at=policy.updated_at,
    )


async def users_of(session: AsyncSession, policy_ids: list[int]) -> dict[int, list[int]]:
    """Schedule ids per policy."""
    found: dict[int, list[int]] = {pid: [] for pid in policy_ids}
    if policy_ids:
        rows = await session.execute(
            select(Schedule.retention_policy_id, Schedule.id)
            .where(Schedule.retention_policy_id.in_(policy_ids))
            .order_by(Schedule.id)
        )
        for policy_id, schedule_id in rows:
            if policy_id is not None:
                found[policy_id].append(schedule_id)
    return found


def policies_query(principal: Principal) -> Select[Any]:
    return readable(select(RetentionPolicy), RetentionPolicy, principal).order_by(
        RetentionPolicy.id
    )


async def get_policy(
    session: AsyncSession, principal: Principal, policy_id: int
) -> RetentionPolicy:
    return await get_readable(
        session, RetentionPolicy, policy_id, principal, name="Retention policy"
    )


async def _ensure_unique_name(
    session: AsyncSession, team_id: int, name: str, exclude: int | None = None
) -> None:
    stmt = select(RetentionPolicy.id).where(
        RetentionPolicy.team_id == team_id, func.lower(RetentionPolicy.name) == func.lower(name)
    )
    if exclude is not None:
        stmt = stmt.where(RetentionPolicy.id != exclude)
    if await session.scalar(stmt.limit(1)) is not None:
        raise Conflict(f"A retention policy named '{name}' already exists in this team")


async def create_policy(
    session: AsyncSession, principal: Principal, data: RetentionPolicyCreate
) -> RetentionPolicy:
    team_id = data.team_id or min(principal.team_ids, default=None)
    if team_id is None:
        raise InvalidInput("You belong to no team; give team_id")
    check_team_access(principal, team_id)
    if await session.get(Team, team_id) is None:
        raise NotFound("Team", team_id)
    await _ensure_unique_name(session, team_id, data.name)
    policy = RetentionPolicy(
        team_id=team_id,
        name=data.name,
        description=data.description,
        min_keep=data.min_keep,
        created_by=principal.user_id or None,
        **{rule: getattr(data, rule) for rule in RULES},
    )
    session.add(policy)
    await session.flush()
    return policy


async def update_policy(
    session: AsyncSession, principal: Principal, policy_id: int, data: RetentionPolicyUpdate
) -> tuple[RetentionPolicy, list[str]]:
    policy = await get_policy(session, principal, policy_id)
    changed: list[str] = []
    for name in data.model_fields_set:
        value = getattr(data, name)
        if value is None and name not in RULES:
            raise InvalidInput(f"{name} cannot be null")
        if value != getattr(policy, name):
            if name == "name":
                await _ensure_unique_name(session, policy.team_id, value, policy.id)
            setattr(policy, name, value)
            changed.append(name)
    if rules_of(policy).empty:
        raise InvalidInput(f"a policy needs at least one rule: {', '.join(RULES)}")
    await session.flush()
    return policy, sorted(changed)


async def delete_policy(
    session: AsyncSession, principal: Principal, policy_id: int
) -> RetentionPolicy:
    policy = await get_policy(session, principal, policy_id)
    used = (await users_of(session, [policy.id]))[policy.id]
    if used:
        raise Conflict(f"Retention policy {policy_id} is used by schedules {used}; detach it first")
    await session.delete(policy)
    await session.flush()
    return policy


def rules_of(policy: RetentionPolicy) -> Rules:
    return Rules(
        keep_last_n=policy.keep_last_n,
        keep_days=policy.keep_days,
        keep_daily=policy.keep_daily,
        keep_weekly=policy.keep_weekly,
        keep_monthly=policy.keep_monthly,
        keep_yearly=policy.keep_yearly,
        min_keep=policy.min_keep,
    )


async def rules_for_schedule(
    session: AsyncSession, schedule: Schedule
) -> tuple[Rules, int | None] | None:
    """The schedule's policy; seed 000's `retention_days` alone acts as keep_days."""
    if schedule.retention_policy_id is not None:
        policy = await session.get(RetentionPolicy, schedule.retention_policy_id)
        if policy is not None:
            return rules_of(policy), policy.id
    if schedule.retention_days:
        return Rules(keep_days=schedule.retention_days), None
    return None


# -- scope and decision -------------------------------------------------------------------
@dataclass(frozen=True)
class Scope:
    team_id: int
    schedule_id: int | None
    server_id: int | None
    database_name: str | None
    timezone: str

    def where(self) -> list[ColumnElement[bool]]:
        conditions = [Backup.team_id == self.team_id]
        if self.schedule_id is not None:
            conditions.append(Backup.schedule_id == self.schedule_id)
        else:
            conditions += [
                Backup.server_id == self.server_id,
                Backup.database_name == self.database_name,
            ]
        return conditions

    @property
    def tz(self) -> tzinfo:
        return cron.zone(self.timezone)


def schedule_scope(schedule: Schedule) -> Scope:
    return Scope(
        team_id=schedule.team_id,
        schedule_id=schedule.id,
        server_id=schedule.server_id,
        database_name=schedule.database_name or schedule.source_path,
        timezone=schedule.timezone,
    )


async def resolve_scope(
    session: AsyncSession, principal: Principal, policy: RetentionPolicy, body: RetentionScope
) -> Scope:
    if body.timezone is not None:
        try:
            cron.zone(body.timezone)
        except ValueError as err:
            raise InvalidInput(str(err)) from None
    if body.schedule_id is not None:
        schedule = await get_readable(
            session, Schedule, body.schedule_id, principal, name="Schedule"
        )
        scope = schedule_scope(schedule)
        if body.timezone is not None:
            scope = replace(scope, timezone=body.timezone)
    else:
        assert body.server_id is not None and body.database_name is not None
        server = await servers.get_server(session, principal, body.server_id)
        scope = Scope(
            team_id=server.team_id,
            schedule_id=None,
            server_id=server.id,
            database_name=body.database_name,
            timezone=body.timezone or "UTC",
        )
    if scope.team_id != policy.team_id:
        raise InvalidInput("The policy and the backups belong to different teams")
    return scope


async def load_items(session: AsyncSession, scope: Scope) -> list[tuple[Item, Backup]]:
    rows = (await session.scalars(select(Backup).where(*scope.where()))).all()
    return [
        (
            Item(
                id=b.id,
                created_at=b.created_at,
                status=b.status,
                verified=b.verification_status in VERIFIED,
                corrupt=b.verification_status in backups.DAMAGED,
            ),
            b,
        )
        for b in rows
    ]


def decide_per_storage(
    items: list[tuple[Item, Backup]], rules: Rules, now: datetime, tz: tzinfo
) -> Decision:
    """The rules apply in each storage on its own: with copies (one dump written to
    several storages), keep_last_n 7 keeps the last 7 dumps in every storage, and each
    storage keeps its own newest completed and verified backups."""
    by_storage: dict[int, list[Item]] = {}
    for item, backup in items:
        by_storage.setdefault(backup.storage_id, []).append(item)
    merged = Decision()
    for group in by_storage.values():
        part = decide(group, rules, now, tz)
        merged.keep.update(part.keep)
        merged.delete.update(part.delete)
    return merged


def _listing(
    decision: Decision, items: list[tuple[Item, Backup]]
) -> tuple[list[RetainedBackup], list[RetainedBackup]]:
    keep, remove = [], []
    for item, _ in sorted(items, key=lambda p: (p[0].created_at, p[0].id), reverse=True):
        if item.id in decision.delete:
            remove.append(
                RetainedBackup(
                    backup_id=item.id,
                    created_at=item.created_at,
                    status=item.status,
                    reasons=[decision.delete[item.id]],
                )
            )
        else:
            keep.append(
                RetainedBackup(
                    backup_id=item.id,
                    created_at=item.created_at,
                    status=item.status,
                    reasons=decision.keep.get(item.id, []),
                )
            )
    return keep, remove


async def preview(
    session: AsyncSession,
    principal: Principal,
    policy_id: int,
    body: RetentionScope,
    now: datetime | None = None,
) -> RetentionPreview:
    """What applying the policy now would keep and delete, and why; changes nothing."""
    policy = await get_policy(session, principal, policy_id)
    scope = await resolve_scope(session, principal, policy, body)
    now = now or utcnow()
    items = await load_items(session, scope)
    decision = decide_per_storage(items, rules_of(policy), now, scope.tz)
    keep, remove = _listing(decision, items)
    return RetentionPreview(
        policy_id=policy.id,
        schedule_id=scope.schedule_id,
        server_id=scope.server_id,
        database_name=scope.database_name,
        timezone=scope.timezone,
        evaluated_at=now,
        keep=keep,
        delete=remove,
    )


# -- applying -------------------------------------------------------------------------------
async def apply(
    db: Database,
    storages: StoragePool,
    rules: Rules,
    scope: Scope,
    *,
    policy_id: int | None = None,
    now: datetime | None = None,
) -> RetentionApplied:
    """Delete what the rules do not keep. Uses its own transactions (never call it inside
    another write transaction); safe to run twice, concurrently, or after an interruption."""
    now = now or utcnow()
    async with db.read_session() as session:
        items = await load_items(session, scope)
    decision = decide_per_storage(items, rules, now, scope.tz)
    keep, remove = _listing(decision, items)
    deleted: list[int] = []
    failed: dict[int, str] = {}
    for entry in sorted(remove, key=lambda r: (r.created_at, r.backup_id)):
        try:
            if await _delete_one(db, storages, entry.backup_id, scope, policy_id, rules):
                deleted.append(entry.backup_id)
        except (AppError, StorageError) as err:
            failed[entry.backup_id] = str(getattr(err, "detail", err))
            log.warning("retention could not delete", backup_id=entry.backup_id, error=str(err))
    return RetentionApplied(
        policy_id=policy_id or 0,
        schedule_id=scope.schedule_id,
        server_id=scope.server_id,
        database_name=scope.database_name,
        timezone=scope.timezone,
        evaluated_at=now,
        keep=keep,
        delete=remove,
        deleted=deleted,
        failed=failed,
    )


async def _newest_completed(session: AsyncSession, scope: Scope, storage_id: int) -> int | None:
    return await session.scalar(
        select(Backup.id)
        .where(
            *scope.where(), Backup.storage_id == storage_id, Backup.status == BackupStatus.COMPLETED
        )
        .order_by(Backup.created_at.desc(), Backup.id.desc())
        .limit(1)
    )


async def _delete_one(
    db: Database,
    storages: StoragePool,
    backup_id: int,
    scope: Scope,
    policy_id: int | None,
    rules: Rules,
) -> bool:
    # 1. decide again under the row lock, then mark it: from here on nothing restores it.
    async with db.write_session() as session:
        backup = await session.scalar(
            select(Backup).where(Backup.id == backup_id, *scope.where()).with_for_update()
        )
        if backup is None:
            return False  # already gone (another pass, or a user)
        key, storage_id = backup.storage_key, backup.storage_id
        provider = await session.get(StorageProvider, storage_id)
        if backup.status == BackupStatus.COMPLETED:
            if await _newest_completed(session, scope, storage_id) == backup.id:
                return False
            await backups.delete_backup(session, RETENTION, backup.id)  # 409 if a job uses it
            backup.status = DELETING
            await session.commit()
        elif backup.status != DELETING:
            return False
    # 2. every object of the backup, then its manifest; deleting what is absent is not
    # an error.
    if key:
        if provider is None:
            raise NotFound("Storage provider", storage_id)
        await delete_backup_objects(storages.get(provider), key)
    # 3. the row, audited in the same transaction.
    async with db.write_session() as session:
        result = await session.execute(
            delete(Backup).where(Backup.id == backup_id, Backup.status == DELETING)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        await audit.record(
            session,
            action="retention.delete",
            username=RETENTION.username,
            resource_type="backup",
            resource_id=backup_id,
            team_id=scope.team_id,
            details={
                "policy_id": policy_id,
                "schedule_id": scope.schedule_id,
                "server_id": scope.server_id,
                "database": scope.database_name,
                "storage_id": storage_id,
                "storage_key": key,
                "rules": {k: v for k, v in rules.__dict__.items() if v},
            },
        )
        await session.commit()
    return True


def announce(app: AppContext, result: RetentionApplied, team_id: int) -> None:
    """`retention.deleted` once per pass that deleted something."""
    if not result.deleted:
        return
    app.events.publish(
        Event(
            "retention.deleted",
            {
                "schedule_id": result.schedule_id,
                "server_id": result.server_id,
                "database_name": result.database_name,
                "policy_id": result.policy_id or None,
                "backup_ids": list(result.deleted),
                "count": len(result.deleted),
                "message": f"Retention deleted {len(result.deleted)} backup(s) of "
                f"{result.database_name or 'a target'}",
            },
            team_id=team_id,
        )
    )


async def after_backup(app: AppContext, backup_id: int, status: str) -> None:
    """Hook for the backup job's finisher: after a successful backup of a schedule with a
    policy, apply that policy to the schedule's backups. Never raises."""
    if status != JobStatus.SUCCEEDED:
        return
    try:
        async with app.db.read_session() as session:
            backup = await session.get(Backup, backup_id)
            schedule = (
                await session.get(Schedule, backup.schedule_id)
                if backup is not None and backup.schedule_id is not None
                else None
            )
            found = await rules_for_schedule(session, schedule) if schedule else None
        if schedule is None or found is None:
            return
        rules, policy_id = found
        result = await apply(
            app.db, app.storages, rules, schedule_scope(schedule), policy_id=policy_id
        )
        announce(app, result, schedule.team_id)
    except Exception:
        log.exception("retention after backup failed", backup_id=backup_id)


async def daily_pass(
    app: AppContext, now: datetime | None = None, *, schedule_ids: Collection[int] | None = None
) -> dict[int, RetentionApplied]:
    """Apply every schedule's policy (the scheduler runs this once a day)."""
    stmt = (
        select(Schedule)
        .where(Schedule.retention_policy_id.is_not(None) | Schedule.retention_days.is_not(None))
        .order_by(Schedule.id)
    )
    if schedule_ids is not None:
        stmt = stmt.where(Schedule.id.in_(list(schedule_ids)))
    async with app.db.read_session() as session:
        schedules = (await session.scalars(stmt)).all()
        plans = [(s, await rules_for_schedule(session, s)) for s in schedules]
    results: dict[int, RetentionApplied] = {}
    for schedule, found in plans:
        if found is None:
            continue
        try:
            results[schedule.id] = await apply(
                app.db,
                app.storages,
                found[0],
                schedule_scope(schedule),
                policy_id=found[1],
                now=now,
            )
            announce(app, results[schedule.id], schedule.team_id)
        except Exception:
            log.exception("daily retention failed", schedule_id=schedule.id)
    return results
