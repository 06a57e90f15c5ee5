"""Channels and alert policies (team-owned), and each user's own notifications and
preferences. Channel secrets are encrypted at rest, bound to their row, never returned."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import as_utc, utcnow
from opscenter.core.errors import Conflict, InvalidInput, NotFound
from opscenter.core.outbound import OutboundPolicy
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.core.security import Keyring
from opscenter.models import (
    AlertPolicy,
    Notification,
    NotificationChannel,
    NotificationPreference,
    Team,
    User,
)
from opscenter.notifications import channels
from opscenter.notifications.schemas import (
    CONFIG_MODELS,
    LEVELS,
    ChannelCreate,
    ChannelOut,
    ChannelUpdate,
    NotificationOut,
    PolicyCreate,
    PolicyOut,
    PolicyUpdate,
    Preference,
    PreferenceOut,
)


class CriticalAlertsRequired(InvalidInput):
    code = "CRITICAL_ALERTS_REQUIRED"


# -- channels -----------------------------------------------------------------------------------
def _context(channel_id: int) -> str:
    return f"notifications.channel:{channel_id}"


def channel_out(channel: NotificationChannel) -> ChannelOut:
    return ChannelOut(
        id=channel.id,
        team_id=channel.team_id,
        name=channel.name,
        type=channel.type,
        is_enabled=channel.is_enabled,
        config=dict(channel.config),
        secret_fields=list(channel.secret_fields),
        has_secret=bool(channel.secret_fields),
        target_host=channel.target_host,
        last_success_at=channel.last_success_at,
        last_error=channel.last_error,
        last_error_at=channel.last_error_at,
        created_at=channel.created_at,
        updated_at=channel.updated_at,
    )


def full_config(keyring: Keyring, channel: NotificationChannel) -> dict[str, Any]:
    """The channel's whole configuration, secrets included: for sending only."""
    secrets: dict[str, Any] = {}
    if channel.secrets_encrypted:
        secrets = json.loads(
            keyring.decrypt_secret(channel.secrets_encrypted, context=_context(channel.id))
        )
    return {**channel.config, **secrets}


def _validated_config(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    try:
        model = CONFIG_MODELS[kind].model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"config.{where}: {first['msg']}") from None
    config = model.model_dump(mode="json", exclude_none=True)
    channels.build(kind, config)  # the service's own rules (token shapes, URL form)
    return config


def _store_config(keyring: Keyring, channel: NotificationChannel, config: dict[str, Any]) -> None:
    secret_names = channels.SECRET_FIELDS[channel.type]
    secrets = {k: v for k, v in config.items() if k in secret_names}
    channel.config = {k: v for k, v in config.items() if k not in secret_names}
    channel.secret_fields = sorted(secrets)
    channel.secrets_encrypted = (
        keyring.encrypt_secret(json.dumps(secrets), context=_context(channel.id))
        if secrets
        else None
    )
    channel.target_host = channels.target_host(channel.type, config)[:255]


def channels_query(principal: Principal) -> Select[Any]:
    return readable(select(NotificationChannel), NotificationChannel, principal).order_by(
        NotificationChannel.id
    )


async def get_channel(
    session: AsyncSession, principal: Principal, channel_id: int
) -> NotificationChannel:
    return await get_readable(
        session, NotificationChannel, channel_id, principal, name="Notification channel"
    )


def _team_of(principal: Principal, team_id: int | None) -> int:
    team = team_id or min(principal.team_ids, default=None)
    if team is None:
        raise InvalidInput("You belong to no team; give team_id or ask an admin to add you")
    check_team_access(principal, team)
    return team


async def _unique_name(
    session: AsyncSession, model: Any, team_id: int, name: str, exclude: int | None = None
) -> None:
    stmt = select(model.id).where(model.team_id == team_id, func.lower(model.name) == name.lower())
    if exclude is not None:
        stmt = stmt.where(model.id != exclude)
    if await session.scalar(stmt.limit(1)) is not None:
        raise Conflict(f"'{name}' already exists in this team")


async def create_channel(
    session: AsyncSession,
    keyring: Keyring,
    outbound: OutboundPolicy,
    principal: Principal,
    data: ChannelCreate,
) -> NotificationChannel:
    team_id = _team_of(principal, data.team_id)
    config = _validated_config(data.type, data.config)
    await asyncio.to_thread(channels.precheck_endpoints, outbound, data.type, config)
    await _unique_name(session, NotificationChannel, team_id, data.name)
    channel = NotificationChannel(
        team_id=team_id,
        name=data.name,
        type=data.type,
        is_enabled=data.is_enabled,
        config={},
        secret_fields=[],
        created_by=principal.user_id,
    )
    session.add(channel)
    await session.flush()  # the id binds the ciphertext to this row
    _store_config(keyring, channel, config)
    await session.flush()
    return channel


async def update_channel(
    session: AsyncSession,
    keyring: Keyring,
    outbound: OutboundPolicy,
    principal: Principal,
    channel_id: int,
    data: ChannelUpdate,
) -> tuple[NotificationChannel, list[str]]:
    channel = await get_channel(session, principal, channel_id)
    changed: list[str] = []
    if data.name is not None and data.name != channel.name:
        await _unique_name(session, NotificationChannel, channel.team_id, data.name, channel.id)
        channel.name = data.name
        changed.append("name")
    if data.is_enabled is not None and data.is_enabled != channel.is_enabled:
        channel.is_enabled = data.is_enabled
        changed.append("is_enabled")
    if data.config is not None:
        merged = {**full_config(keyring, channel), **data.config}
        config = _validated_config(channel.type, merged)
        await asyncio.to_thread(channels.precheck_endpoints, outbound, channel.type, config)
        _store_config(keyring, channel, config)
        changed.append("config")
    await session.flush()
    return channel, changed


async def delete_channel(
    session: AsyncSession, principal: Principal, channel_id: int
) -> NotificationChannel:
    channel = await get_channel(session, principal, channel_id)
    await session.delete(channel)
    await session.flush()
    return channel


def record_delivery(channel: NotificationChannel, error: str | None) -> None:
    now = utcnow()
    if error is None:
        channel.last_success_at = now
    else:
        channel.last_error = error[:2000]
        channel.last_error_at = now


# -- alert policies -----------------------------------------------------------------------------
def policy_out(policy: AlertPolicy) -> PolicyOut:
    return PolicyOut.model_validate(policy)


def policies_query(principal: Principal) -> Select[Any]:
    return readable(select(AlertPolicy), AlertPolicy, principal).order_by(AlertPolicy.id)


async def get_policy(session: AsyncSession, principal: Principal, policy_id: int) -> AlertPolicy:
    return await get_readable(session, AlertPolicy, policy_id, principal, name="Alert policy")


async def _check_targets(
    session: AsyncSession,
    team_id: int,
    channel_ids: list[int] | None,
    user_ids: list[int] | None,
    team_ids: list[int] | None,
) -> None:
    """A policy may route only to its own team's channels, to existing users and teams."""
    if channel_ids:
        found = set(
            await session.scalars(
                select(NotificationChannel.id).where(
                    NotificationChannel.id.in_(channel_ids), NotificationChannel.team_id == team_id
                )
            )
        )
        if missing := sorted(set(channel_ids) - found):
            raise InvalidInput(f"channel_ids: no channel {missing[0]} in this team")
    if user_ids:
        found = set(await session.scalars(select(User.id).where(User.id.in_(user_ids))))
        if missing := sorted(set(user_ids) - found):
            raise InvalidInput(f"user_ids: no user {missing[0]}")
    if team_ids:
        found = set(await session.scalars(select(Team.id).where(Team.id.in_(team_ids))))
        if missing := sorted(set(team_ids) - found):
            raise InvalidInput(f"team_ids: no team {missing[0]}")


_POLICY_LISTS = (
    "event_types",
    "environments",
    "server_ids",
    "schedule_ids",
    "channel_ids",
    "user_ids",
    "team_ids",
)


async def create_policy(
    session: AsyncSession, principal: Principal, data: PolicyCreate
) -> AlertPolicy:
    team_id = _team_of(principal, data.team_id)
    await _unique_name(session, AlertPolicy, team_id, data.name)
    await _check_targets(session, team_id, data.channel_ids, data.user_ids, data.team_ids)
    policy = AlertPolicy(
        team_id=team_id,
        name=data.name,
        description=data.description,
        is_enabled=data.is_enabled,
        min_severity=data.min_severity,
        throttle_seconds=data.throttle_seconds,
        open_incident=data.open_incident.model_dump() if data.open_incident else None,
        created_by=principal.user_id,
        **{name: sorted(set(getattr(data, name))) for name in _POLICY_LISTS},
    )
    session.add(policy)
    await session.flush()
    return policy


async def update_policy(
    session: AsyncSession, principal: Principal, policy_id: int, data: PolicyUpdate
) -> tuple[AlertPolicy, list[str]]:
    policy = await get_policy(session, principal, policy_id)
    if data.name is not None and data.name != policy.name:
        await _unique_name(session, AlertPolicy, policy.team_id, data.name, policy.id)
    await _check_targets(session, policy.team_id, data.channel_ids, data.user_ids, data.team_ids)
    changed = []
    if "open_incident" in data.model_fields_set:
        action = data.open_incident.model_dump() if data.open_incident else None
        if action != policy.open_incident:
            policy.open_incident = action
            changed.append("open_incident")
    for name in data.model_fields_set - {"open_incident"}:
        value = getattr(data, name)
        if value is None:
            continue
        if name in _POLICY_LISTS:
            value = sorted(set(value))
        if value != getattr(policy, name):
            setattr(policy, name, value)
            changed.append(name)
    await session.flush()
    return policy, sorted(changed)


async def delete_policy(session: AsyncSession, principal: Principal, policy_id: int) -> AlertPolicy:
    policy = await get_policy(session, principal, policy_id)
    await session.delete(policy)
    await session.flush()
    return policy


# -- the in-app notification center ----------------------------------------------------------
def notification_out(item: Notification) -> NotificationOut:
    return NotificationOut(
        id=item.id,
        type=item.type,
        level=item.level,
        title=item.title,
        message=item.message,
        details=dict(item.details),
        read=item.read_at is not None,
        read_at=item.read_at,
        created_at=item.created_at,
    )


def notifications_query(
    principal: Principal,
    *,
    unread: bool | None = None,
    level: str | None = None,
    type: str | None = None,
    since: datetime | None = None,
) -> Select[Any]:
    stmt = select(Notification).where(Notification.user_id == principal.user_id)
    if unread is True:
        stmt = stmt.where(Notification.read_at.is_(None))
    elif unread is False:
        stmt = stmt.where(Notification.read_at.is_not(None))
    if level:
        stmt = stmt.where(Notification.level == level)
    if type:
        if type.endswith(".*"):
            stmt = stmt.where(Notification.type.startswith(type[:-1]))
        else:
            stmt = stmt.where(Notification.type == type)
    if since is not None:
        stmt = stmt.where(Notification.created_at >= as_utc(since))
    return stmt.order_by(Notification.id.desc())


async def unread_count(session: AsyncSession, principal: Principal) -> int:
    count = await session.scalar(
        select(func.count(Notification.id)).where(
            Notification.user_id == principal.user_id, Notification.read_at.is_(None)
        )
    )
    return int(count or 0)


async def get_own(
    session: AsyncSession, principal: Principal, notification_id: int
) -> Notification:
    """Someone else's notification does not exist for the caller (404)."""
    item = await session.scalar(
        select(Notification).where(
            Notification.id == notification_id, Notification.user_id == principal.user_id
        )
    )
    if item is None:
        raise NotFound("Notification", notification_id)
    return item


async def mark_read(
    session: AsyncSession, principal: Principal, notification_id: int
) -> Notification:
    item = await get_own(session, principal, notification_id)
    if item.read_at is None:
        item.read_at = utcnow()
        await session.flush()
    return item


async def mark_all_read(session: AsyncSession, principal: Principal) -> int:
    result = await session.execute(
        update(Notification)
        .where(Notification.user_id == principal.user_id, Notification.read_at.is_(None))
        .values(read_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def delete_notification(
    session: AsyncSession, principal: Principal, notification_id: int
) -> Notification:
    item = await get_own(session, principal, notification_id)
    await session.delete(item)
    await session.flush()
    return item


# -- preferences --------------------------------------------------------------------------------
async def preferences_of(session: AsyncSession, user_id: int) -> list[NotificationPreference]:
    rows = await session.scalars(
        select(NotificationPreference)
        .where(NotificationPreference.user_id == user_id)
        .order_by(NotificationPreference.event_type, NotificationPreference.channel)
    )
    return list(rows)


def preference_out(pref: NotificationPreference) -> PreferenceOut:
    return PreferenceOut(
        event_type=pref.event_type,
        channel=pref.channel,
        enabled=pref.enabled,
        min_level=pref.min_level,
    )


async def replace_preferences(
    session: AsyncSession, principal: Principal, wanted: list[Preference]
) -> list[NotificationPreference]:
    """The list replaces the user's preferences. Critical alerts always reach the user
    in-app: turning in-app off, or asking for less than critical, is refused."""
    seen: set[tuple[str, str]] = set()
    for pref in wanted:
        key = (pref.event_type, pref.channel)
        if key in seen:
            raise InvalidInput(f"preference for {pref.event_type} / {pref.channel} given twice")
        seen.add(key)
        if pref.channel == "in_app" and not pref.enabled:
            raise CriticalAlertsRequired(
                f"in-app notifications for {pref.event_type} cannot be turned off: critical "
                "alerts always reach you; set min_level to 'critical' to get only those"
            )
    await session.execute(
        delete(NotificationPreference).where(NotificationPreference.user_id == principal.user_id)
    )
    for pref in wanted:
        session.add(
            NotificationPreference(
                user_id=principal.user_id,
                event_type=pref.event_type,
                channel=pref.channel,
                enabled=pref.enabled,
                min_level=pref.min_level,
            )
        )
    await session.flush()
    return await preferences_of(session, principal.user_id)


def pattern_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def _specificity(pattern: str) -> int:
    return 0 if pattern == "*" else 1 if pattern.endswith(".*") else 2


def wants(
    prefs: list[NotificationPreference], channel: str, event_type: str, level: str, *, default: bool
) -> bool:
    """Whether a user's preferences let this event through on this delivery channel: the
    most specific matching pattern decides; critical always passes in-app."""
    if channel == "in_app" and level == "critical":
        return True
    matching = [
        p for p in prefs if p.channel == channel and pattern_matches(p.event_type, event_type)
    ]
    if not matching:
        return default
    best = max(matching, key=lambda p: _specificity(p.event_type))
    return best.enabled and LEVELS.index(level) >= LEVELS.index(best.min_level)
