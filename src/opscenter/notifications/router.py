"""Notification channels (seed 001), alert policies and each user's notification center
(seed 002): `/notifications/...`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.db import release
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.pagination import (
    CursorPaging,
    KeysetPage,
    Page,
    Paging,
    PathId,
    keyset_page,
    paginate,
)
from opscenter.core.principal import Principal
from opscenter.models import Notification
from opscenter.notifications import dispatch, service
from opscenter.notifications.schemas import (
    ChannelCreate,
    ChannelOut,
    ChannelUpdate,
    Level,
    MarkedRead,
    NotificationOut,
    PolicyCreate,
    PolicyOut,
    PolicyUpdate,
    PreferencesOut,
    PreferencesUpdate,
    TestRequest,
    TestResult,
    UnreadCount,
)

router = APIRouter(prefix="/notifications", tags=["Notifications"])
# Everyone's own inbox needs only read access: reading, marking and deleting one's own.
ReadNotifications = Annotated[Principal, Depends(require("read:notifications"))]
WriteNotifications = Annotated[Principal, Depends(require("write:notifications"))]
DELIVERY_CHANNELS = ["in_app", "email"]


# -- channels -----------------------------------------------------------------------------------
@router.get("/channels", response_model=Page[ChannelOut])
async def list_channels(
    principal: ReadNotifications, session: SessionDep, paging: Paging
) -> Page[ChannelOut]:
    rows, total = await paginate(session, service.channels_query(principal), paging)
    return Page.of([service.channel_out(c) for c in rows], total, paging)


@router.post(
    "/channels",
    response_model=ChannelOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Forbidden, NotFound, Conflict, InvalidInput),
)
async def create_channel(
    body: ChannelCreate,
    principal: WriteNotifications,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> ChannelOut:
    """Secret settings (webhook URLs, tokens, passwords) are stored encrypted and never
    shown again; addresses inside the network are refused unless allow-listed."""
    channel = await service.create_channel(session, ctx.keyring, ctx.outbound, principal, body)
    await audit.record(
        session,
        action="notification_channel.create",
        actor=principal,
        resource_type="notification_channel",
        resource_id=channel.id,
        details={"name": channel.name, "type": channel.type, "host": channel.target_host},
        origin=origin_of(request),
    )
    return service.channel_out(channel)


@router.get("/channels/{channel_id}", response_model=ChannelOut, responses=responses(NotFound))
async def get_channel(
    channel_id: PathId, principal: ReadNotifications, session: SessionDep
) -> ChannelOut:
    return service.channel_out(await service.get_channel(session, principal, channel_id))


@router.patch(
    "/channels/{channel_id}",
    response_model=ChannelOut,
    responses=responses(Forbidden, NotFound, Conflict, InvalidInput),
)
@router.put(  # the verb of seed 002's other updates: the same body and meaning as PATCH
    "/channels/{channel_id}",
    response_model=ChannelOut,
    responses=responses(Forbidden, NotFound, Conflict, InvalidInput),
)
async def update_channel(
    channel_id: PathId,
    body: ChannelUpdate,
    principal: WriteNotifications,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> ChannelOut:
    channel, changed = await service.update_channel(
        session, ctx.keyring, ctx.outbound, principal, channel_id, body
    )
    await audit.record(
        session,
        action="notification_channel.update",
        actor=principal,
        resource_type="notification_channel",
        resource_id=channel.id,
        details={"changed": changed},
        origin=origin_of(request),
    )
    return service.channel_out(channel)


@router.delete(
    "/channels/{channel_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(Forbidden, NotFound),
)
async def delete_channel(
    channel_id: PathId, principal: WriteNotifications, session: SessionDep, request: Request
) -> None:
    channel = await service.delete_channel(session, principal, channel_id)
    await audit.record(
        session,
        action="notification_channel.delete",
        actor=principal,
        resource_type="notification_channel",
        resource_id=channel_id,
        team_id=channel.team_id,
        details={"name": channel.name, "type": channel.type},
        origin=origin_of(request),
    )


@router.post(
    "/test", response_model=TestResult, responses=responses(Forbidden, NotFound, InvalidInput)
)
async def test_channel(
    body: TestRequest,
    principal: WriteNotifications,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> TestResult:
    """Send a test message now. A refused address is a 422 `OUTBOUND_BLOCKED`; a service
    that does not accept the message is `delivered: false` with the reason."""
    channel = await service.get_channel(session, principal, body.channel_id)
    config = service.full_config(ctx.keyring, channel)
    await release(session)
    error = await dispatch.send_now(
        ctx.outbound,
        channel.type,
        config,
        body.title,
        body.message,
        "info",
        ctx.settings.notify_timeout_seconds,
    )
    channel = await service.get_channel(session, principal, body.channel_id)
    service.record_delivery(channel, error)
    await audit.record(
        session,
        action="notification_channel.test",
        actor=principal,
        resource_type="notification_channel",
        resource_id=channel.id,
        details={"delivered": error is None},
        outcome="success" if error is None else "failure",
        origin=origin_of(request),
    )
    return TestResult(channel_id=channel.id, delivered=error is None, error=error)


# -- alert policies -----------------------------------------------------------------------------
@router.get("/policies", response_model=Page[PolicyOut])
async def list_policies(
    principal: ReadNotifications, session: SessionDep, paging: Paging
) -> Page[PolicyOut]:
    rows, total = await paginate(session, service.policies_query(principal), paging)
    return Page.of([service.policy_out(p) for p in rows], total, paging)


@router.post(
    "/policies",
    response_model=PolicyOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Forbidden, NotFound, Conflict, InvalidInput),
)
async def create_policy(
    body: PolicyCreate, principal: WriteNotifications, session: SessionDep, request: Request
) -> PolicyOut:
    policy = await service.create_policy(session, principal, body)
    await audit.record(
        session,
        action="alert_policy.create",
        actor=principal,
        resource_type="alert_policy",
        resource_id=policy.id,
        details={"name": policy.name},
        origin=origin_of(request),
    )
    return service.policy_out(policy)


@router.get("/policies/{policy_id}", response_model=PolicyOut, responses=responses(NotFound))
async def get_policy(
    policy_id: PathId, principal: ReadNotifications, session: SessionDep
) -> PolicyOut:
    return service.policy_out(await service.get_policy(session, principal, policy_id))


@router.patch(
    "/policies/{policy_id}",
    response_model=PolicyOut,
    responses=responses(Forbidden, NotFound, Conflict, InvalidInput),
)
async def update_policy(
    policy_id: PathId,
    body: PolicyUpdate,
    principal: WriteNotifications,
    session: SessionDep,
    request: Request,
) -> PolicyOut:
    policy, changed = await service.update_policy(session, principal, policy_id, body)
    await audit.record(
        session,
        action="alert_policy.update",
        actor=principal,
        resource_type="alert_policy",
        resource_id=policy.id,
        details={"changed": changed},
        origin=origin_of(request),
    )
    return service.policy_out(policy)


@router.delete(
    "/policies/{policy_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(Forbidden, NotFound),
)
async def delete_policy(
    policy_id: PathId, principal: WriteNotifications, session: SessionDep, request: Request
) -> None:
    policy = await service.delete_policy(session, principal, policy_id)
    await audit.record(
        session,
        action="alert_policy.delete",
        actor=principal,
        resource_type="alert_policy",
        resource_id=policy_id,
        team_id=policy.team_id,
        details={"name": policy.name},
        origin=origin_of(request),
    )


# -- the caller's own notifications ----------------------------------------------------------
@router.get("", response_model=KeysetPage[NotificationOut])
async def list_notifications(
    principal: ReadNotifications,
    session: SessionDep,
    paging: CursorPaging,
    unread: bool | None = None,
    level: Level | None = None,
    type: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_]+(\.([a-z_]+|\*))?$")] = None,
    since: datetime | None = None,
) -> KeysetPage[NotificationOut]:
    stmt = service.notifications_query(
        principal, unread=unread, level=level, type=type, since=since
    )
    rows, total, next_cursor = await keyset_page(session, stmt, paging, Notification.id)
    return KeysetPage.keyset(
        [service.notification_out(n) for n in rows], total, paging, next_cursor
    )


@router.get("/unread-count", response_model=UnreadCount)
async def unread_count(principal: ReadNotifications, session: SessionDep) -> UnreadCount:
    return UnreadCount(unread=await service.unread_count(session, principal))


@router.get("/preferences", response_model=PreferencesOut)
async def get_preferences(principal: ReadNotifications, session: SessionDep) -> PreferencesOut:
    prefs = await service.preferences_of(session, principal.user_id)
    return PreferencesOut(
        preferences=[service.preference_out(p) for p in prefs], channels=DELIVERY_CHANNELS
    )


@router.put("/preferences", response_model=PreferencesOut, responses=responses(InvalidInput))
async def put_preferences(
    body: PreferencesUpdate, principal: ReadNotifications, session: SessionDep, request: Request
) -> PreferencesOut:
    """Replaces the caller's preferences. In-app critical alerts cannot be turned off
    (422 `CRITICAL_ALERTS_REQUIRED`); without a preference, in-app is on and e-mail off."""
    prefs = await service.replace_preferences(session, principal, body.preferences)
    await audit.record(
        session,
        action="notification_preferences.update",
        actor=principal,
        resource_type="user",
        resource_id=principal.user_id,
        details={"count": len(prefs)},
        origin=origin_of(request),
    )
    return PreferencesOut(
        preferences=[service.preference_out(p) for p in prefs], channels=DELIVERY_CHANNELS
    )


@router.post("/mark-all-read", response_model=MarkedRead)
async def mark_all_read(
    principal: ReadNotifications, session: SessionDep, request: Request
) -> MarkedRead:
    marked = await service.mark_all_read(session, principal)
    await audit.record(
        session,
        action="notification.mark_all_read",
        actor=principal,
        resource_type="user",
        resource_id=principal.user_id,
        details={"marked": marked},
        origin=origin_of(request),
    )
    return MarkedRead(marked=marked)


@router.post(
    "/{notification_id}/read", response_model=NotificationOut, responses=responses(NotFound)
)
async def mark_read(
    notification_id: PathId, principal: ReadNotifications, session: SessionDep, request: Request
) -> NotificationOut:
    item = await service.mark_read(session, principal, notification_id)
    await audit.record(
        session,
        action="notification.read",
        actor=principal,
        resource_type="notification",
        resource_id=item.id,
        origin=origin_of(request),
    )
    return service.notification_out(item)


@router.delete(
    "/{notification_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(NotFound)
)
async def delete_notification(
    notification_id: PathId, principal: ReadNotifications, session: SessionDep, request: Request
) -> None:
    await service.delete_notification(session, principal, notification_id)
    await audit.record(
        session,
        action="notification.delete",
        actor=principal,
        resource_type="notification",
        resource_id=notification_id,
        origin=origin_of(request),
    )
