"""The notification dispatcher: a subscriber on the event bus. For each alert-worthy event
it picks recipients (alert policies, else the defaults, then each user's preferences),
stores in-app notifications and pushes them live, and sends to channels in threads with a
timeout, recording each channel's outcome. Nothing here may block or crash the loop."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.logging import get_logger
from opscenter.core.outbound import OutboundPolicy
from opscenter.core.principal import ALL_TEAMS
from opscenter.models import (
    AlertPolicy,
    Backup,
    Notification,
    NotificationChannel,
    NotificationPreference,
    Role,
    Schedule,
    Server,
    User,
    team_members,
)
from opscenter.notifications import channels, service
from opscenter.notifications.schemas import LEVELS

log = get_logger("opscenter.notifications")

# Events that are progress, not news; a backup's job events repeat its backup.* events.
_QUIET_ACTIONS = frozenset({"progress", "started", "queued", "running", "created"})
_HEALTH_LEVEL = {"healthy": "info", "degraded": "warning", "unknown": "warning"}
_LEVEL_OF = {
    "backup.completed": "info",
    "backup.cancelled": "warning",
    "backup.failed": "error",
    "backup.interrupted": "error",
    "backup.corrupt": "critical",
    "verification.completed": "info",
    "verification.failed": "error",
    "external_job.overdue": "warning",
    "external_job.recovered": "info",
    "integration.disabled": "warning",
    "job.succeeded": "info",
    "job.cancelled": "warning",
    "job.failed": "error",
    "job.interrupted": "error",
}


def severity(event: Event) -> str:
    """The one severity mapping: info | warning | error | critical. An event's own
    `severity` wins when it names a level."""
    given = event.data.get("severity")
    if isinstance(given, str) and given.lower() in LEVELS:
        return given.lower()
    if event.type == "server.health_changed":
        return _HEALTH_LEVEL.get(str(event.data.get("health_status")), "error")
    if event.type in _LEVEL_OF:
        return _LEVEL_OF[event.type]
    return "error" if event.type.endswith(".failed") else "info"


def alertable(event: Event) -> bool:
    prefix, _, action = event.type.partition(".")
    if prefix == "notification" or action in _QUIET_ACTIONS or not action:
        return False
    return not (prefix == "job" and event.data.get("kind") == "backup")


def describe(event: Event, level: str) -> tuple[str, str]:
    """A short title and a message, from fields that never hold secrets."""
    data = event.data
    prefix, _, action = event.type.partition(".")
    subject = next(
        (
            f"{key.removesuffix('_id').replace('_', ' ')} {data[key]}"
            for key in ("backup_id", "server_id", "external_job_id", "integration_id", "job_id")
            if key in data
        ),
        prefix.replace("_", " "),
    )
    # What happened to the backup, when it is not the backup itself: "Restore of backup 5".
    work = {"restore": "restore", "verify": "verification", "verification": "verification"}
    of = work.get(prefix) or (work.get(str(data.get("kind"))) if prefix == "job" else None)
    if of and "backup_id" in data:
        into = f" into {data['target_database']}" if data.get("target_database") else ""
        subject = f"{of} of backup {data['backup_id']}{into}"
    happened = action.replace("_", " ")
    if event.type == "server.health_changed" and data.get("health_status"):
        happened = f"is {data['health_status']}"
    title = f"{subject[:1].upper()}{subject[1:]} {happened}"[:200]
    detail = data.get("error") or data.get("message") or data.get("health_status") or ""
    message = f"{title}: {detail}" if detail else title
    return title, f"[{level}] {message}"[:2000]


@dataclass
class Facts:
    """What policies filter on, found from the event's subject."""

    team_id: int | None
    environment: str | None = None
    server_id: int | None = None
    schedule_id: int | None = None
    schedule_opt_in: bool | None = None  # the schedule's notify_on_success/failure


async def facts_of(session: AsyncSession, event: Event) -> Facts:
    data = event.data
    facts = Facts(team_id=event.team_id, server_id=_int(data.get("server_id")))
    facts.schedule_id = _int(data.get("schedule_id"))
    backup_id = _int(data.get("backup_id"))
    if backup_id is not None:
        backup = await session.get(Backup, backup_id)
        if backup is not None:
            facts.server_id = facts.server_id or backup.server_id
            facts.schedule_id = facts.schedule_id or backup.schedule_id
    if facts.schedule_id is not None and event.type in ("backup.completed", "backup.failed"):
        schedule = await session.get(Schedule, facts.schedule_id)
        if schedule is not None:
            facts.schedule_opt_in = (
                schedule.notify_on_success
                if event.type == "backup.completed"
                else schedule.notify_on_failure
            )
    if facts.server_id is not None:
        server = await session.get(Server, facts.server_id)
        if server is not None:
            facts.environment = server.environment
    facts.environment = str(data.get("environment") or facts.environment or "") or None
    return facts


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def subject_of(event: Event, facts: Facts) -> tuple[Any, ...]:
    """What the throttle counts per: the server or schedule (a flapping server is one
    subject), else the event's own resource."""
    data = event.data
    if facts.server_id is not None or facts.schedule_id is not None:
        return ("target", facts.server_id, facts.schedule_id)
    for key in ("external_job_id", "integration_id", "backup_id", "job_id"):
        if key in data:
            return (key, data[key])
    return ()


def policy_matches(policy: AlertPolicy, event: Event, level: str, facts: Facts) -> bool:
    return (
        any(service.pattern_matches(p, event.type) for p in policy.event_types)
        and LEVELS.index(level) >= LEVELS.index(policy.min_severity)
        and (not policy.environments or facts.environment in policy.environments)
        and (not policy.server_ids or facts.server_id in policy.server_ids)
        and (not policy.schedule_ids or facts.schedule_id in policy.schedule_ids)
    )


class Throttle:
    """At most one delivery per key per window (in this process)."""

    def __init__(self) -> None:
        self._last: dict[tuple[Any, ...], float] = {}

    def allow(self, key: tuple[Any, ...], window: float) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < window:
            return False
        self._last[key] = now
        if len(self._last) > 10_000:  # forget the oldest half, so memory stays bounded
            for old in sorted(self._last, key=self._last.__getitem__)[:5000]:
                del self._last[old]
        return True


@dataclass
class Plan:
    channel_ids: set[int]
    users: dict[int, int | None]  # user id -> the policy that chose them (None: default)


async def send_now(
    outbound: OutboundPolicy,
    kind: str,
    config: dict[str, Any],
    title: str,
    body: str,
    level: str,
    limit_seconds: float,
) -> str | None:
    """Check the addresses, then send, in a thread with a timeout. None on success, else a
    reason without secrets. Raises OutboundBlocked for a refused address."""

    def check_and_send() -> None:
        channels.check_endpoints(outbound, kind, config)
        channels.deliver(kind, config, title, body, level)

    try:
        await asyncio.wait_for(asyncio.to_thread(check_and_send), limit_seconds)
    except channels.OutboundBlocked:
        raise
    except channels.DeliveryFailed as err:
        return str(err)
    except TimeoutError:
        return f"no answer within {limit_seconds:g} s"
    except Exception as err:  # a malformed stored config or a library bug: report, go on
        return channels.scrub(f"{type(err).__name__}: {err}", config, kind)[:2000]
    return None


class NotificationDispatcher:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.throttle = Throttle()
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notification-dispatcher")
        await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sends:
            await asyncio.wait(self._sends, timeout=self.ctx.settings.notify_timeout_seconds)
        for task in self._sends:
            task.cancel()

    async def _run(self) -> None:
        async with self.ctx.events.subscribe() as queue:
            self._ready.set()
            while True:
                event = await queue.get()
                if not alertable(event):
                    continue
                try:
                    await self.handle(event)
                except Exception:
                    log.exception("notification dispatch failed", event_type=event.type)

    async def handle(self, event: Event) -> None:
        level = severity(event)
        title, message = describe(event, level)
        async with self.ctx.db.write_session() as session:
            facts = await facts_of(session, event)
            if facts.schedule_opt_in is False:
                return  # the schedule asked not to be told about this outcome
            plan = await self._plan(session, event, level, facts)
            notes = await self._store(session, event, level, title, message, facts, plan)
            email_to = await self._email_copies(session, event, level, plan)
            await session.commit()
        for note in notes:
            self.ctx.events.publish(
                Event(
                    "notification.created",
                    {
                        "user_id": note.user_id,
                        "notification_id": note.id,
                        "level": note.level,
                        "message": note.message,
                        "details": note.details,
                    },
                )
            )
        for channel_id in sorted(plan.channel_ids):
            self._spawn(channel_id, title, message, level, None)
        for channel_id, address in email_to:
            self._spawn(channel_id, title, message, level, address)

    async def _plan(self, session: AsyncSession, event: Event, level: str, facts: Facts) -> Plan:
        stmt = select(AlertPolicy).where(AlertPolicy.is_enabled.is_(True))
        if facts.team_id is not None:
            stmt = stmt.where(AlertPolicy.team_id == facts.team_id)
        policies = list(await session.scalars(stmt))
        subject = subject_of(event, facts)
        plan = Plan(channel_ids=set(), users={})
        matched = [p for p in policies if policy_matches(p, event, level, facts)]
        for policy in matched:
            if not self.throttle.allow(
                ("policy", policy.id, event.type, subject), policy.throttle_seconds
            ):
                continue
            plan.channel_ids.update(policy.channel_ids)
            for user_id in [*policy.user_ids, *await _members(session, policy.team_ids)]:
                plan.users.setdefault(user_id, policy.id)
        # Until a policy names a channel, it gets failures and critical alerts: nobody
        # misses a failed backup for having skipped a setup step.
        if LEVELS.index(level) >= LEVELS.index("error") or facts.schedule_opt_in:
            window = self.ctx.settings.notify_default_throttle_seconds
            routed = {c for p in policies for c in p.channel_ids}
            stmt2 = select(NotificationChannel.id).where(NotificationChannel.is_enabled.is_(True))
            if facts.team_id is not None:
                stmt2 = stmt2.where(NotificationChannel.team_id == facts.team_id)
            for channel_id in await session.scalars(stmt2):
                if channel_id not in routed and self.throttle.allow(
                    ("channel", channel_id, event.type, subject), window
                ):
                    plan.channel_ids.add(channel_id)
            if not matched:
                members = (
                    await _members(session, [facts.team_id])
                    if facts.team_id is not None
                    else await _admins(session)
                )
                for user_id in members:
                    if self.throttle.allow(("user", user_id, event.type, subject), window):
                        plan.users.setdefault(user_id, None)
        return plan

    async def _store(
        self,
        session: AsyncSession,
        event: Event,
        level: str,
        title: str,
        message: str,
        facts: Facts,
        plan: Plan,
    ) -> list[Notification]:
        users = await _eligible(session, plan.users, facts.team_id)
        prefs = await _preferences(session, users)
        details = {k: v for k, v in event.data.items() if k != "severity"} | {"severity": level}
        notes = [
            Notification(
                user_id=user_id,
                team_id=facts.team_id,
                type=event.type[:64],
                level=level,
                title=title,
                message=message,
                details=details,
                policy_id=plan.users[user_id],
            )
            for user_id in users
            if service.wants(prefs.get(user_id, []), "in_app", event.type, level, default=True)
        ]
        session.add_all(notes)
        await session.flush()
        plan.users = {u: plan.users[u] for u in users}
        return notes

    async def _email_copies(
        self, session: AsyncSession, event: Event, level: str, plan: Plan
    ) -> list[tuple[int, str]]:
        """Users who asked for e-mail get a copy at their own address, through their
        team's first enabled e-mail channel."""
        if not plan.users:
            return []
        prefs = await _preferences(session, list(plan.users))
        wanted = [
            u
            for u in plan.users
            if service.wants(prefs.get(u, []), "email", event.type, level, default=False)
        ]
        if not wanted:
            return []
        stmt = (
            select(NotificationChannel.id)
            .where(NotificationChannel.type == "email", NotificationChannel.is_enabled.is_(True))
            .order_by(NotificationChannel.id)
        )
        if event.team_id is not None:
            stmt = stmt.where(NotificationChannel.team_id == event.team_id)
        channel_id = await session.scalar(stmt.limit(1))
        if channel_id is None:
            return []
        rows = await session.execute(select(User.id, User.email).where(User.id.in_(wanted)))
        return [(channel_id, email) for _, email in rows.all()]

    def _spawn(
        self, channel_id: int, title: str, message: str, level: str, address: str | None
    ) -> None:
        task = asyncio.create_task(self.send_to_channel(channel_id, title, message, level, address))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def send_to_channel(
        self, channel_id: int, title: str, message: str, level: str, address: str | None = None
    ) -> None:
        ctx = self.ctx
        try:
            async with ctx.db.read_session() as session:
                channel = await session.get(NotificationChannel, channel_id)
                if channel is None or not channel.is_enabled:
                    return
                kind = channel.type
                config = service.full_config(ctx.keyring, channel)
            if address is not None:
                config = {**config, "to": [address]}
            try:
                error = await send_now(
                    ctx.outbound,
                    kind,
                    config,
                    title,
                    message,
                    level,
                    ctx.settings.notify_timeout_seconds,
                )
            except channels.OutboundBlocked as blocked:
                error = blocked.detail
            async with ctx.db.write_session() as session:
                channel = await session.get(NotificationChannel, channel_id)
                if channel is not None:
                    service.record_delivery(channel, error)
                    await session.commit()
            if error is not None:
                log.warning(
                    "notification channel failed", channel_id=channel_id, type=kind, error=error
                )
        except Exception:
            log.exception("notification send failed", channel_id=channel_id)


async def _members(session: AsyncSession, team_ids: list[int]) -> list[int]:
    if not team_ids:
        return []
    rows = await session.scalars(
        select(team_members.c.user_id).where(team_members.c.team_id.in_(team_ids))
    )
    return sorted(set(rows))


async def _admins(session: AsyncSession) -> list[int]:
    rows = await session.scalars(
        select(User.id).join(Role, Role.id == User.role_id).where(Role.name == "admin")
    )
    return list(rows)


async def _eligible(
    session: AsyncSession, candidates: dict[int, int | None], team_id: int | None
) -> list[int]:
    """Active users who may see the event's team (members, or roles that see all teams)."""
    if not candidates:
        return []
    rows = await session.execute(
        select(User.id, Role.permissions)
        .join(Role, Role.id == User.role_id)
        .where(User.id.in_(list(candidates)), User.is_active.is_(True))
    )
    members = set(await _members(session, [team_id])) if team_id is not None else set()
    eligible = []
    for user_id, permissions in rows.all():
        if team_id is None or user_id in members or ALL_TEAMS in (permissions or []):
            eligible.append(user_id)
    return sorted(eligible)


async def _preferences(
    session: AsyncSession, user_ids: list[int]
) -> dict[int, list[NotificationPreference]]:
    result: dict[int, list[NotificationPreference]] = {}
    if not user_ids:
        return result
    rows = await session.scalars(
        select(NotificationPreference).where(NotificationPreference.user_id.in_(user_ids))
    )
    for pref in rows:
        result.setdefault(pref.user_id, []).append(pref)
    return result
