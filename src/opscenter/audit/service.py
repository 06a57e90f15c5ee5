"""The audit trail: append-only rows, each chained to the previous by sha256."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import isoformat_z, utcnow
from opscenter.core.db import AdvisoryLock, advisory_xact_lock
from opscenter.core.logging import redact
from opscenter.core.principal import Principal
from opscenter.models import (
    AlertPolicy,
    AuditCheckpoint,
    AuditLog,
    Backup,
    ExternalJob,
    Job,
    Notification,
    NotificationChannel,
    RetentionPolicy,
    Schedule,
    Server,
    StorageProvider,
    VerificationRun,
)

GENESIS = "0" * 64
# The team-owned subjects of entries: an entry about one carries its team.
TEAM_OWNED: dict[str, Any] = {
    "alert_policy": AlertPolicy,
    "backup": Backup,
    "external_job": ExternalJob,
    "job": Job,
    "notification": Notification,
    "notification_channel": NotificationChannel,
    "retention_policy": RetentionPolicy,
    "schedule": Schedule,
    "server": Server,
    "storage": StorageProvider,
    "verification": VerificationRun,
}


@dataclass(frozen=True)
class Origin:
    """Where a request came from."""

    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class AuditFilters:
    user_id: int | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    outcome: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    query: str | None = None
    before_id: int | None = None
    # Non-admins: only entries about their teams' objects, and their own actions.
    team_ids: frozenset[int] | None = None
    own_user_id: int | None = None


@dataclass(frozen=True)
class ChainReport:
    """A walk of the chain: `checked` entries after entry `after_id` (0: from the first),
    up to entry `head_id`, or where it broke."""

    valid: bool
    checked: int
    first_bad_id: int | None = None
    problem: str | None = None
    head_hash: str | None = None
    head_id: int | None = None
    after_id: int = 0
    #: When the checkpoint the walk continued was made.
    after_at: datetime | None = None


def _digest(row: Any) -> str:
    """The entry's hash; `row` is an AuditLog or a row of its columns."""
    body = {
        "created_at": isoformat_z(row.created_at),
        "user_id": row.user_id,
        "username": row.username,
        **({"team_id": row.team_id} if row.team_id is not None else {}),
        "api_key_id": row.api_key_id,
        "action": row.action,
        "resource_type": row.resource_type,
        "resource_id": row.resource_id,
        "outcome": row.outcome,
        "details": row.details,
        "ip_address": row.ip_address,
        "user_agent": row.user_agent,
        "request_id": row.request_id,
        "prev_hash": row.prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One entry to append: what was done, by whom, to what (see `record`)."""

    action: str
    actor: Principal | None = None
    user_id: int | None = None
    username: str | None = None
    resource_type: str | None = None
    resource_id: object | None = None
    details: dict[str, Any] | None = None
    outcome: str = "success"
    origin: Origin | None = None
    team_id: int | None = None


async def record(
    session: AsyncSession,
    *,
    action: str,
    actor: Principal | None = None,
    user_id: int | None = None,
    username: str | None = None,
    resource_type: str | None = None,
    resource_id: object | None = None,
    details: dict[str, Any] | None = None,
    outcome: str = "success",
    origin: Origin | None = None,
    team_id: int | None = None,
) -> AuditLog:
    """Append one row in the caller's transaction, so it commits or rolls back with the change.

    The entry's team is the subject's (`resource_type`, `resource_id`), looked up unless
    given: give it when the subject is already deleted.
    """
    entry = Entry(
        action=action,
        actor=actor,
        user_id=user_id,
        username=username,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details,
        outcome=outcome,
        origin=origin,
        team_id=team_id,
    )
    [row] = await append(session, [entry])
    return row


async def append(session: AsyncSession, entries: Sequence[Entry]) -> list[AuditLog]:
    """Append entries, in order, in the caller's transaction: one INSERT for them all.

    The chain head is read under a lock: an advisory lock on PostgreSQL; on SQLite every
    write transaction already holds the database's single write lock (BEGIN IMMEDIATE).
    """
    await advisory_xact_lock(session, AdvisoryLock.AUDIT_CHAIN)
    prev = await session.scalar(select(AuditLog.hash).order_by(AuditLog.id.desc()).limit(1))
    rows = []
    for entry in entries:
        team_id = entry.team_id
        if team_id is None:
            team_id = await _team_of(session, entry.resource_type, entry.resource_id)
        actor, origin = entry.actor, entry.origin or Origin()
        row = AuditLog(
            created_at=utcnow(),
            user_id=actor.user_id if actor else entry.user_id,
            username=actor.username if actor else entry.username,
            team_id=team_id,
            api_key_id=actor.api_key_id if actor else None,
            action=entry.action,
            resource_type=entry.resource_type,
            resource_id=None if entry.resource_id is None else str(entry.resource_id),
            outcome=entry.outcome,
            details=redact(entry.details or {}),
            ip_address=origin.ip_address,
            user_agent=(origin.user_agent or "")[:300] or None,
            request_id=origin.request_id,
            prev_hash=prev or GENESIS,
        )
        row.hash = prev = _digest(row)
        rows.append(row)
    session.add_all(rows)
    await session.flush()
    return rows


def reader_scope(principal: Principal) -> dict[str, Any]:
    """The AuditFilters fields that keep a reader to what they may see: admins every
    entry, others those about their teams' objects and their own actions."""
    return {
        "team_ids": None if principal.sees_all_teams else principal.team_ids,
        "own_user_id": principal.user_id,
    }


def action_names(action: str) -> list[str]:
    """The action as given, and the dotted names it may spell the seed's way (seed 001's
    `backup_create` is our `backup.create`; actions have one dot, after any `_`)."""
    return [action, *(action[:i] + "." + action[i + 1 :] for i, c in enumerate(action) if c == "_")]


async def _team_of(
    session: AsyncSession, resource_type: str | None, resource_id: object | None
) -> int | None:
    model = TEAM_OWNED.get(resource_type or "")
    if model is None or not str(resource_id).isdigit():
        return None
    team: int | None = await session.scalar(
        select(model.team_id).where(model.id == int(str(resource_id)))
    )
    return team


def filtered(filters: AuditFilters) -> Select[AuditLog]:
    stmt = select(AuditLog)
    if filters.team_ids is not None:
        stmt = stmt.where(
            or_(AuditLog.team_id.in_(filters.team_ids), AuditLog.user_id == filters.own_user_id)
        )
    if filters.user_id is not None:
        stmt = stmt.where(AuditLog.user_id == filters.user_id)
    if filters.action:
        stmt = stmt.where(AuditLog.action.in_(action_names(filters.action)))
    if filters.resource_type:
        stmt = stmt.where(AuditLog.resource_type == filters.resource_type)
    if filters.resource_id:
        stmt = stmt.where(AuditLog.resource_id == filters.resource_id)
    if filters.outcome:
        stmt = stmt.where(AuditLog.outcome == filters.outcome)
    if filters.start:
        stmt = stmt.where(AuditLog.created_at >= filters.start)
    if filters.end:
        stmt = stmt.where(AuditLog.created_at <= filters.end)
    if filters.before_id is not None:
        stmt = stmt.where(AuditLog.id < filters.before_id)
    if filters.query:
        # autoescape: a `%` or `_` typed by the caller is a character, not a wildcard.
        term = filters.query
        stmt = stmt.where(
            or_(
                AuditLog.action.icontains(term, autoescape=True),
                AuditLog.username.icontains(term, autoescape=True),
                AuditLog.resource_type.icontains(term, autoescape=True),
                AuditLog.resource_id.icontains(term, autoescape=True),
                AuditLog.ip_address.icontains(term, autoescape=True),
                cast(AuditLog.details, String).icontains(term, autoescape=True),
            )
        )
    return stmt.order_by(AuditLog.id.desc())


async def iter_rows(
    session: AsyncSession, stmt: Select[AuditLog], batch: int = 500
) -> AsyncIterator[AuditLog]:
    """Keyset-paged iteration: constant memory however long the trail is."""
    last_id: int | None = None
    while True:
        page = stmt if last_id is None else stmt.where(AuditLog.id < last_id)
        rows = (await session.scalars(page.limit(batch))).all()
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        last_id = rows[-1].id


#: What an entry's hash covers, with its id: a walk reads these as rows, not objects.
CHAINED = list(AuditLog.__table__.columns)


async def verify_chain(
    session: AsyncSession, since: AuditCheckpoint | None = None, batch: int = 1000
) -> ChainReport:
    """Walk the chain oldest first: an edited row fails its hash, a removed one its link.

    From the first entry, or with `since` only the entries after that checkpoint's last
    one, once that entry still carries the hash the checkpoint recorded. An edit before it
    shows only in a walk from the first entry. Such a walk also holds every entry a
    checkpoint recorded to that hash (a stretch rewritten with recomputed hashes and links
    still differs from it) and finds the entries gone that a checkpoint saw (a truncated
    tail, which no link betrays)."""
    prev_hash, last_id = GENESIS, 0
    if since is not None:
        row = (await session.execute(select(*CHAINED).where(AuditLog.id == since.last_id))).first()
        if row is None or row.hash != since.last_hash or _digest(row) != row.hash:
            problem = (
                "this entry was removed or changed since the checkpoint of "
                f"{isoformat_z(since.verified_at)}"
            )
            return ChainReport(False, 0, since.last_id, problem)
        prev_hash, last_id = since.last_hash, since.last_id
    after_id, after_at = last_id, since.verified_at if since else None
    checked = 0
    recorded = await _recorded(session, after_id)
    while True:
        rows = (
            await session.execute(
                select(*CHAINED).where(AuditLog.id > last_id).order_by(AuditLog.id).limit(batch)
            )
        ).all()
        for row in rows:
            broken: str | None = None
            if row.prev_hash != prev_hash:
                broken = "a row before this one was removed or reordered"
            elif _digest(row) != row.hash:
                broken = "this row was edited after it was written"
            elif recorded.get(row.id, row.hash) != row.hash:
                broken = "this row differs from the hash a checkpoint recorded for it"
            if broken:
                return ChainReport(False, checked, row.id, broken)
            prev_hash, last_id = row.hash, row.id
            checked += 1
        if len(rows) < batch:
            break
    if recorded and max(recorded) > last_id:
        gone = "the entries up to this one, seen by a checkpoint, are gone"
        return ChainReport(False, checked, max(recorded), gone)
    if not last_id:  # an empty trail
        return ChainReport(True, 0)
    return ChainReport(True, checked, None, None, prev_hash, last_id, after_id, after_at)


async def _recorded(session: AsyncSession, after_id: int) -> dict[int, str]:
    """The hashes checkpoints recorded for entries after `after_id`."""
    rows = await session.execute(
        select(AuditCheckpoint.last_id, AuditCheckpoint.last_hash).where(
            AuditCheckpoint.last_id > after_id
        )
    )
    return {i: h for i, h in rows}


async def latest_checkpoint(session: AsyncSession) -> AuditCheckpoint | None:
    """The checkpoint that reached furthest."""
    stmt = (
        select(AuditCheckpoint)
        .order_by(AuditCheckpoint.last_id.desc(), AuditCheckpoint.id.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def save_checkpoint(
    session: AsyncSession, report: ChainReport, at: datetime
) -> AuditCheckpoint | None:
    """Record a walk that held and verified entries (nothing else is worth a checkpoint)."""
    if not report.valid or not report.checked or report.head_id is None:
        return None
    assert report.head_hash is not None
    row = AuditCheckpoint(
        verified_at=at, after_id=report.after_id, last_id=report.head_id, last_hash=report.head_hash
    )
    session.add(row)
    await session.flush()
    return row
