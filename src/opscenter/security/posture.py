"""Posture checks: this installation's own state, read from its tables and settings.
Each check answers the subjects that fail it; nothing here writes or calls out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.config import Settings
from opscenter.core import cron
from opscenter.models import ApiKey, AuditLog, Backup, BackupStatus, Role, Schedule, Server, User
from opscenter.models.encryption import EscrowRecipient
from opscenter.security import policies as pol
from opscenter.security.scan_schemas import Check

#: Verification states that prove a backup can be read back (verify's ranks above none).
VERIFIED = ("checksum_ok", "deep_ok", "restore_verified")
ADMIN_PERMISSION = "write:users"


@dataclass(frozen=True)
class Issue:
    subject: str  # stable: the fingerprint is made of the policy and this
    title: str
    severity: str | None = None  # None: the policy's own


async def _admins_password_age(
    session: AsyncSession, p: pol.AdminPasswordAge, now: datetime, _: Settings
) -> list[Issue]:
    """Admins whose password was last set (created, or changed as the audit trail records)
    longer ago than `max_days`."""
    roles = (await session.execute(select(Role.id, Role.name, Role.permissions))).all()
    admin_roles = [
        r.id for r in roles if r.name == "admin" or ADMIN_PERMISSION in (r.permissions or [])
    ]
    rows = await session.execute(
        select(User.id, User.username, User.created_at).where(
            User.is_active.is_(True), User.role_id.in_(admin_roles)
        )
    )
    admins = {r.id: (r.username, r.created_at) for r in rows.all()}
    if not admins:
        return []
    changes = await session.execute(
        select(AuditLog.resource_id, AuditLog.created_at, AuditLog.details).where(
            AuditLog.action == "user.update",
            AuditLog.outcome == "success",
            AuditLog.resource_type == "user",
            AuditLog.resource_id.in_([str(i) for i in admins]),
        )
    )
    last_set = {i: created for i, (_, created) in admins.items()}
    for resource_id, at, details in changes.all():
        if "password" in (details or {}).get("changed", []):
            last_set[int(resource_id)] = max(last_set[int(resource_id)], at)
    limit = now - timedelta(days=p.max_days)
    return [
        Issue(
            f"user:{i}",
            f"Admin {admins[i][0]!r} has not changed their password for "
            f"{(now - last_set[i]).days} days (policy: {p.max_days})",
        )
        for i in sorted(admins)
        if last_set[i] < limit
    ]


async def _api_keys(
    session: AsyncSession, p: pol.ApiKeyExpiry, now: datetime, _: Settings
) -> list[Issue]:
    """Usable keys that never expire, or live longer than `max_lifetime_days`."""
    keys = await session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.created_at, ApiKey.expires_at).where(
            ApiKey.revoked_at.is_(None), or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now)
        )
    )
    longest = timedelta(days=p.max_lifetime_days)
    issues = []
    for key_id, name, created, expires in keys.all():
        if expires is None:
            issues.append(Issue(f"api_key:{key_id}", f"API key {name!r} never expires"))
        elif expires - created > longest:
            issues.append(
                Issue(
                    f"api_key:{key_id}",
                    f"API key {name!r} lives {(expires - created).days} days "
                    f"(policy: at most {p.max_lifetime_days})",
                )
            )
    return issues


async def _server_names(session: AsyncSession, ids: set[int | None]) -> dict[int, str]:
    found = await session.execute(select(Server.id, Server.name).where(Server.id.in_(ids)))
    return {i: name for i, name in found.all()}


async def _unencrypted(
    session: AsyncSession, p: pol.BackupEncryption, now: datetime, _: Settings
) -> list[Issue]:
    """Backup targets that wrote an unencrypted backup within `window_days`."""
    rows = (
        await session.execute(
            select(Backup.server_id, Backup.database_name, func.count())
            .where(
                Backup.status == BackupStatus.COMPLETED,
                Backup.is_encrypted.is_(False),
                Backup.completed_at >= now - timedelta(days=p.window_days),
            )
            .group_by(Backup.server_id, Backup.database_name)
        )
    ).all()
    names = await _server_names(session, {r[0] for r in rows})
    return [
        Issue(
            f"target:{server_id}/{database}",
            f"{count} unencrypted backup(s) of {names.get(server_id or 0, 'a deleted server')}"
            f"/{database} in the last {p.window_days} days",
        )
        for server_id, database, count in rows
    ]


async def _rpo(session: AsyncSession, p: pol.BackupRpo, now: datetime, _: Settings) -> list[Issue]:
    """Enabled database schedules whose newest verified backup is older than their RPO:
    the schedule's interval times `rpo_intervals`."""
    schedules = (
        await session.scalars(
            select(Schedule).where(Schedule.enabled.is_(True), Schedule.database_name.is_not(None))
        )
    ).all()
    if not schedules:
        return []
    newest = await session.execute(
        select(Backup.server_id, Backup.database_name, func.max(Backup.completed_at))
        .where(Backup.status == BackupStatus.COMPLETED, Backup.verification_status.in_(VERIFIED))
        .group_by(Backup.server_id, Backup.database_name)
    )
    verified = {(s, d): at for s, d, at in newest.all()}
    names = await _server_names(session, {s.server_id for s in schedules})
    issues = []
    for s in schedules:
        tz = cron.zone(s.timezone)
        first = cron.next_after(s.cron_expression, tz, now)
        second = first and cron.next_after(s.cron_expression, tz, first)
        if not first or not second:
            continue  # never fires again: no RPO to keep
        rpo = (second - first) * p.rpo_intervals
        last = verified.get((s.server_id, s.database_name or ""))
        if last is None or now - last > rpo:
            since = "none yet" if last is None else f"the newest is {_age(now - last)} old"
            issues.append(
                Issue(
                    f"target:{s.server_id}/{s.database_name}",
                    f"{names.get(s.server_id, s.server_id)}/{s.database_name} has no verified "
                    f"backup within its RPO of {_age(rpo)} ({since})",
                )
            )
    return issues


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


async def _escrow(session: AsyncSession, _p: BaseModel, _now: datetime, _: Settings) -> list[Issue]:
    count = await session.scalar(select(func.count()).select_from(EscrowRecipient))
    if count:
        return []
    return [
        Issue(
            "escrow",
            "No escrow key: losing this server's key loses every encrypted backup",
        )
    ]


async def _inactive(
    session: AsyncSession, p: pol.InactiveUsers, now: datetime, _: Settings
) -> list[Issue]:
    """Enabled accounts with no login for `days` (never: counted from their creation)."""
    since = now - timedelta(days=p.days)
    rows = await session.execute(
        select(User.id, User.username, User.last_login, User.created_at).where(
            User.is_active.is_(True),
            func.coalesce(User.last_login, User.created_at) < since,
        )
    )
    return [
        Issue(
            f"user:{i}",
            f"User {name!r} has not logged in for {(now - (last or created)).days} days "
            f"(policy: {p.days})",
        )
        for i, name, last, created in rows.all()
    ]


async def _settings(
    _s: AsyncSession, p: pol.WeakSettings, _now: datetime, settings: Settings
) -> list[Issue]:
    issues = []
    if not settings.rate_limit_enabled:
        issues.append(
            Issue("setting:rate_limit", "Rate limiting is off (OPSCENTER_RATE_LIMIT_ENABLED)")
        )
    if not settings.secure_cookies:
        issues.append(
            Issue("setting:secure_cookies", "Session cookies are sent over plain HTTP too "
                  "(OPSCENTER_SECURE_COOKIES is off)")
        )  # fmt: skip
    if "*" in settings.allowed_origins:
        issues.append(Issue("setting:allowed_origins", "Every web origin may call the API (*)"))
    if settings.access_token_minutes > p.max_access_token_minutes:
        issues.append(
            Issue("setting:access_token_minutes", f"Access tokens live "
                  f"{settings.access_token_minutes} minutes (policy: {p.max_access_token_minutes})")
        )  # fmt: skip
    if settings.jwt_secret is not None and len(settings.jwt_secret) < p.min_jwt_secret_length:
        issues.append(
            Issue("setting:jwt_secret", f"The JWT secret is shorter than {p.min_jwt_secret_length}")
        )
    return issues


CheckFn = Callable[[AsyncSession, Any, datetime, Settings], Awaitable[list[Issue]]]
POSTURE: dict[Check, CheckFn] = {
    Check.ADMIN_PASSWORD_AGE: _admins_password_age,
    Check.API_KEY_EXPIRY: _api_keys,
    Check.BACKUP_ENCRYPTION: _unencrypted,
    Check.BACKUP_RPO: _rpo,
    Check.ESCROW_KEY: _escrow,
    Check.INACTIVE_USERS: _inactive,
    Check.WEAK_SETTINGS: _settings,
}


async def run(session: AsyncSession, policy: Any, now: datetime, settings: Settings) -> list[Issue]:
    """The subjects failing one posture policy."""
    check = Check(policy.check)
    return await POSTURE[check](session, pol.parameters(check, policy.parameters), now, settings)
