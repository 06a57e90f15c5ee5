"""The notification center: the inbox (and its live-refreshed list), the channels and the
alert policies that route events to them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.notifications import service as notifications
from opscenter.notifications.schemas import CONFIG_MODELS, LEVELS


async def _inbox(session: AsyncSession, principal: Principal) -> dict[str, object]:
    stmt = notifications.notifications_query(principal).limit(LIST_LIMIT)
    rows = (await session.scalars(stmt)).all()
    return {
        "inbox": [notifications.notification_out(n) for n in rows],
        "unread": await notifications.unread_count(session, principal),
    }


async def notifications_page(principal: Principal, session: SessionDep) -> View:
    channel_rows = (
        await session.scalars(notifications.channels_query(principal).limit(LIST_LIMIT))
    ).all()
    policy_rows = (
        await session.scalars(notifications.policies_query(principal).limit(LIST_LIMIT))
    ).all()
    return View(
        "notifications.html",
        {
            **await _inbox(session, principal),
            "channels": [notifications.channel_out(c) for c in channel_rows],
            "channel_types": list(CONFIG_MODELS),
            "policies": [notifications.policy_out(p) for p in policy_rows],
            "channel_names": {c.id: c.name for c in channel_rows},
            "levels": LEVELS,
        },
    )


async def inbox_partial(principal: Principal, session: SessionDep) -> View:
    """The notification center's list, re-rendered after a change or a live event."""
    return View("partials/inbox.html", await _inbox(session, principal))
