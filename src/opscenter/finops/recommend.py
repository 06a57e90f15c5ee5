"""Recommendations: typed rules over the backups catalog, storage prices, imported cost
lines and credits, each finding with an estimated monthly saving and a link to what it
is about. A refresh keeps the status people gave a finding (dismissed, applied) and
drops open findings whose rule no longer fires.

Servers idle by their resource metrics is not a rule yet: it needs the resource
monitoring domain's metrics, which this installation does not hold."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import utcnow
from opscenter.core.principal import Principal
from opscenter.core.scoping import get_readable, readable
from opscenter.finops import service
from opscenter.finops.schemas import RecommendationOut, RefreshOut
from opscenter.finops.service import GIB, PricedBackup, amount
from opscenter.models import (
    Backup,
    BackupStatus,
    CostImport,
    CostLine,
    Recommendation,
    Schedule,
    StoragePrice,
    StorageProvider,
)
from opscenter.models.finops import ImportStatus, RecommendationStatus
from opscenter.retention import service as retention

RULES = ("retention_excess", "cheaper_storage", "empty_storage", "credit_expiring")
SKIPPED = {"idle_servers": "needs resource metrics, which the resources domain will provide"}
OLD_BACKUP_DAYS = 30
CREDIT_WARNING_DAYS = 30


@dataclass(frozen=True)
class Finding:
    team_id: int
    rule: str
    subject_type: str
    subject_id: int | None
    subject_key: str
    title: str
    detail: str
    link: str
    saving: int  # nano-units per month
    currency: str


def _gb(size: int) -> str:
    return f"{size / GIB:.2f} GB"


async def _retention_excess(
    session: AsyncSession, principal: Principal, priced: dict[int, PricedBackup]
) -> list[Finding]:
    """Completed backups that their schedule's retention policy would already delete."""
    findings = []
    stmt = readable(select(Schedule), Schedule, principal).order_by(Schedule.id)
    now = utcnow()
    for schedule in (await session.scalars(stmt)).all():
        found = await retention.rules_for_schedule(session, schedule)
        if found is None or found[0].empty:
            continue
        scope = retention.schedule_scope(schedule)
        items = await retention.load_items(session, scope)
        decision = retention.decide_per_storage(items, found[0], now, scope.tz)
        excess = [
            b
            for item, b in items
            if item.id in decision.delete and b.status == BackupStatus.COMPLETED
        ]
        by_currency: dict[str, list[PricedBackup]] = defaultdict(list)
        for b in excess:
            if b.id in priced:
                by_currency[priced[b.id].currency].append(priced[b.id])
        for cur, backups in by_currency.items():
            size = sum(b.size_bytes for b in backups)
            findings.append(
                Finding(
                    team_id=schedule.team_id,
                    rule="retention_excess",
                    subject_type="schedule",
                    subject_id=schedule.id,
                    subject_key=f"schedule:{schedule.id}:{cur}",
                    title=f"{len(backups)} backups of '{schedule.name}' are kept beyond"
                    " its retention policy",
                    detail=f"They hold {_gb(size)} that the policy no longer needs; apply"
                    " the retention policy (or fix why it did not run) to delete them."
                    f" Backups: {', '.join(str(b.id) for b in backups[:20])}",
                    link=f"/schedules/{schedule.id}",
                    saving=sum(b.monthly for b in backups),
                    currency=cur,
                )
            )
    return findings


@dataclass(frozen=True)
class Offer:
    storage_id: int
    name: str
    price: int


async def cheapest_storage(
    session: AsyncSession, principal: Principal
) -> dict[tuple[int, str], Offer]:
    """Each team's cheapest active priced storage, per currency."""
    stmt = (
        select(StoragePrice, StorageProvider.name)
        .join(StorageProvider, StorageProvider.id == StoragePrice.storage_id)
        .where(StorageProvider.is_active.is_(True))
    )
    cheapest: dict[tuple[int, str], Offer] = {}
    for price, name in await session.execute(readable(cast(Any, stmt), StoragePrice, principal)):
        key = (price.team_id, price.currency)
        if key not in cheapest or price.price_per_gb_month < cheapest[key].price:
            cheapest[key] = Offer(price.storage_id, name, price.price_per_gb_month)
    return cheapest


def _cheaper_storage(
    backups: list[PricedBackup], cheapest: dict[tuple[int, str], Offer]
) -> list[Finding]:
    """Backups older than 30 days on a storage that costs more than the team's cheapest."""
    old = utcnow() - timedelta(days=OLD_BACKUP_DAYS)
    grouped: dict[int, list[PricedBackup]] = defaultdict(list)
    for b in backups:
        target = cheapest.get((b.team_id, b.currency))
        if target is not None and b.since < old and b.price > target.price:
            grouped[b.storage_id].append(b)
    findings = []
    for storage_id, group in grouped.items():
        first = group[0]
        target = cheapest[(first.team_id, first.currency)]
        size = sum(b.size_bytes for b in group)
        findings.append(
            Finding(
                team_id=first.team_id,
                rule="cheaper_storage",
                subject_type="storage",
                subject_id=storage_id,
                subject_key=f"storage:{storage_id}",
                title=f"{len(group)} backups older than {OLD_BACKUP_DAYS} days sit on"
                f" '{first.storage_name}'; '{target.name}' holds them for less",
                detail=f"{_gb(size)} at {amount(first.price)} instead of"
                f" {amount(target.price)} {first.currency} per GB-month: copy older backups"
                f" to '{target.name}' (or have their schedule write there).",
                link="/storage",
                saving=round(size / GIB * (first.price - target.price)),
                currency=first.currency,
            )
        )
    return findings


async def _empty_storage(session: AsyncSession, principal: Principal) -> list[Finding]:
    """Active storage holding no completed backup; the saving is what the imported bills
    charged for it (its bucket or name as the resource) over the last 30 days."""
    holding = select(Backup.storage_id).where(Backup.status == BackupStatus.COMPLETED)
    stmt = readable(
        select(StorageProvider).where(
            StorageProvider.is_active.is_(True), StorageProvider.id.not_in(holding)
        ),
        StorageProvider,
        principal,
    )
    findings = []
    since = utcnow().date() - timedelta(days=30)
    for provider in (await session.scalars(stmt)).all():
        names = [provider.name, *(str(provider.config.get(k, "")) for k in ("bucket", "path"))]
        names = [n for n in names if n]
        rows = (
            await session.execute(
                select(CostLine.currency, func.sum(CostLine.effective_cost))
                .join(CostImport, CostImport.id == CostLine.import_id)
                .where(
                    CostImport.status == ImportStatus.COMPLETED,
                    CostLine.team_id == provider.team_id,
                    CostLine.charge_day >= since,
                    or_(CostLine.resource_id.in_(names), CostLine.resource_name.in_(names)),
                )
                .group_by(CostLine.currency)
            )
        ).all()
        billed = {cur: int(total or 0) for cur, total in rows} or {"": 0}
        for cur, total in billed.items():
            findings.append(
                Finding(
                    team_id=provider.team_id,
                    rule="empty_storage",
                    subject_type="storage",
                    subject_id=provider.id,
                    subject_key=f"storage:{provider.id}:{cur}",
                    title=f"Storage '{provider.name}' holds no backups",
                    detail="No completed backup is stored there. Remove the provider (and its"
                    " bucket or share) if nothing else uses it."
                    + (" Its imported bills show what it costs." if total else ""),
                    link="/storage",
                    saving=max(total, 0),
                    currency=cur,
                )
            )
    return findings


async def _credit_expiring(session: AsyncSession, principal: Principal) -> list[Finding]:
    credits = (await session.scalars(service.credits_query(principal))).all()
    findings = []
    horizon = service.today() + timedelta(days=CREDIT_WARNING_DAYS)
    for use in await service.credit_uses(session, principal, credits):
        c, left = use.credit, use.credit.amount - use.applied
        if left <= 0 or not service.today() <= c.expires_on <= horizon:
            continue
        days = (c.expires_on - service.today()).days
        findings.append(
            Finding(
                team_id=c.team_id,
                rule="credit_expiring",
                subject_type="credit",
                subject_id=c.id,
                subject_key=f"credit:{c.id}",
                title=f"Credit '{c.name}' expires in {days} days with"
                f" {amount(left)} {c.currency} unused",
                detail="Move spending onto "
                + (f"'{c.provider}'" if c.provider else "the credited provider")
                + " before it expires, or the rest is lost.",
                link=f"/finops#credit-{c.id}",
                saving=left,
                currency=c.currency,
            )
        )
    return findings


async def findings(session: AsyncSession, principal: Principal) -> list[Finding]:
    backups, _ = await service.priced_backups(session, principal)
    return [
        *await _retention_excess(session, principal, {b.id: b for b in backups}),
        *_cheaper_storage(backups, await cheapest_storage(session, principal)),
        *await _empty_storage(session, principal),
        *await _credit_expiring(session, principal),
    ]


async def refresh(session: AsyncSession, principal: Principal) -> RefreshOut:
    found = {(f.team_id, f.rule, f.subject_key): f for f in await findings(session, principal)}
    existing = (
        await session.scalars(readable(select(Recommendation), Recommendation, principal))
    ).all()
    created = resolved = 0
    for rec in existing:
        f = found.pop((rec.team_id, rec.rule, rec.subject_key), None)
        if f is None:
            if rec.status == RecommendationStatus.OPEN:
                await session.delete(rec)
                resolved += 1
            continue
        rec.title, rec.detail, rec.link = f.title[:500], f.detail, f.link
        rec.monthly_saving, rec.currency = f.saving, f.currency
    for f in found.values():
        session.add(
            Recommendation(
                team_id=f.team_id,
                rule=f.rule,
                subject_type=f.subject_type,
                subject_id=f.subject_id,
                subject_key=f.subject_key,
                title=f.title[:500],
                detail=f.detail,
                link=f.link,
                monthly_saving=f.saving,
                currency=f.currency,
            )
        )
        created += 1
    await session.flush()
    open_count = await session.scalar(
        readable(
            select(func.count(Recommendation.id)).where(
                Recommendation.status == RecommendationStatus.OPEN
            ),
            Recommendation,
            principal,
        )
    )
    return RefreshOut(
        open=int(open_count or 0),
        created=created,
        resolved=resolved,
        rules=list(RULES),
        skipped_rules=dict(SKIPPED),
    )


def recommendations_query(
    principal: Principal, status: str | None = None, rule: str | None = None
) -> Select[Any]:
    stmt = readable(select(Recommendation), Recommendation, principal)
    if status:
        stmt = stmt.where(Recommendation.status == status)
    if rule:
        stmt = stmt.where(Recommendation.rule == rule)
    return stmt.order_by(Recommendation.monthly_saving.desc(), Recommendation.id)


def recommendation_out(rec: Recommendation) -> RecommendationOut:
    return RecommendationOut(
        id=rec.id,
        team_id=rec.team_id,
        rule=rec.rule,
        subject_type=rec.subject_type,
        subject_id=rec.subject_id,
        title=rec.title,
        detail=rec.detail,
        link=rec.link,
        estimated_monthly_saving=amount(rec.monthly_saving),
        currency=rec.currency,
        status=rec.status,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
    )


async def set_status(
    session: AsyncSession, principal: Principal, rec_id: int, status: RecommendationStatus
) -> Recommendation:
    rec = await get_readable(session, Recommendation, rec_id, principal, name="Recommendation")
    rec.status = status
    rec.status_changed_by = principal.user_id or None
    rec.updated_at = utcnow()
    await session.flush()
    return rec


def details(rec: Recommendation) -> dict[str, Any]:
    return {"rule": rec.rule, "subject_key": rec.subject_key, "status": rec.status}
