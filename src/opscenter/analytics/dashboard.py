"""What the dashboard shows, in one call: the week's figures, the last 14 days of backups
and the open insights (about a minute old at most: `insights.recent`)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.analytics import insights, service
from opscenter.analytics.figures import Period
from opscenter.analytics.schemas import DashboardOut
from opscenter.core.principal import Principal

WINDOW_DAYS = 7
DAILY_DAYS = 14
SHOWN_INSIGHTS = 5


async def data(session: AsyncSession, principal: Principal, now: datetime) -> DashboardOut:
    period = Period(now - timedelta(days=WINDOW_DAYS), now)
    backups, verification = await service.backup_totals(session, principal, period)
    found = [i for i in await insights.recent(session, principal, now) if not i.dismissed]
    return DashboardOut(
        generated_at=now,
        window=period.out(),
        backups=backups,
        rpo=await service.rpo(session, principal, now),
        verification=verification,
        restore_tests=await service.restore_tests(session, principal, period),
        incidents=await service.incidents(session, principal, period),
        open_findings=await service.open_findings(session, principal),
        spend=await service.spend(session, principal, period),
        daily=await service.daily(
            session, principal, Period(now - timedelta(days=DAILY_DAYS), now)
        ),
        insights_total=len(found),
        insights_by_kind=dict(Counter(i.kind for i in found)),
        insights=found[:SHOWN_INSIGHTS],
    )
