"""FinOps figures, computed from stored facts only: the daily roll-ups of completed
imports, the backups catalog priced per storage provider, credits and budgets. Every
sum is grouped by currency; nothing here adds two currencies together."""

from __future__ import annotations

import calendar
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Select, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import utcnow
from opscenter.core.errors import Conflict, InvalidInput
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.finops.schemas import (
    BackupCostItem,
    BackupCostsOut,
    BreakdownItem,
    BreakdownOut,
    BudgetIn,
    BudgetOut,
    CreditIn,
    CreditOut,
    CurrencyTotal,
    ImportDetail,
    ImportOut,
    Money,
    RejectedRow,
    StepPoint,
    StoragePriceIn,
    StoragePriceOut,
    SummaryOut,
    Window,
)
from opscenter.models import (
    Backup,
    BackupStatus,
    Budget,
    CostCredit,
    CostImport,
    CostLine,
    CostRollup,
    StoragePrice,
    StorageProvider,
    Team,
)

NANO = 1_000_000_000
GIB = 2**30
HOURS_PER_MONTH = 730  # the cloud providers' GB-month
BACKUP_SERVICE = "Backup storage"
MAX_WINDOW_DAYS = 3660
MAX_POINTS = 400
_DAYS = re.compile(r"^(\d{1,4})d$")
AGGREGATES = ("service", "team", "environment", "provider", "region", "category")


def amount(nano: int | Decimal | float) -> float:
    return round(float(nano) / NANO, 6)


def to_nano(value: Decimal) -> int:
    return int(value.scaleb(9).to_integral_value())


def today() -> date:
    return utcnow().date()


# -- windows --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    start: date
    end: date  # exclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def out(self) -> Window:
        return Window(start=self.start, end=self.end, days=self.days)

    def previous(self) -> Span:
        return Span(self.start - timedelta(days=self.days), self.start)

    def hours(self) -> tuple[datetime, datetime]:
        return (
            datetime.combine(self.start, time(), UTC),
            datetime.combine(self.end, time(), UTC),
        )


def parse_window(text: str, now: date) -> Span:
    """OpenCost's window words: `today`, `yesterday`, `week`, `month`, `lastmonth`, `Nd`
    (the last N days, today included), or `YYYY-MM-DD,YYYY-MM-DD` (end exclusive)."""
    text = text.strip().lower()
    if text == "today":
        return Span(now, now + timedelta(days=1))
    if text == "yesterday":
        return Span(now - timedelta(days=1), now)
    if text == "week":
        return Span(now - timedelta(days=now.weekday()), now + timedelta(days=1))
    if text == "month":
        return Span(now.replace(day=1), now + timedelta(days=1))
    if text == "lastmonth":
        first = now.replace(day=1)
        return Span((first - timedelta(days=1)).replace(day=1), first)
    if m := _DAYS.match(text):
        days = int(m.group(1))
        if not 1 <= days <= MAX_WINDOW_DAYS:
            raise InvalidInput(f"window: between 1d and {MAX_WINDOW_DAYS}d")
        return Span(now - timedelta(days=days - 1), now + timedelta(days=1))
    start_text, sep, end_text = text.partition(",")
    try:
        span = Span(date.fromisoformat(start_text[:10]), date.fromisoformat(end_text[:10]))
    except ValueError:
        raise InvalidInput(
            "window: use today, yesterday, week, month, lastmonth, 7d, 30d, ... or"
            " YYYY-MM-DD,YYYY-MM-DD"
        ) from None
    if not sep or not 1 <= span.days <= MAX_WINDOW_DAYS:
        raise InvalidInput(f"window: the end must be 1 to {MAX_WINDOW_DAYS} days after the start")
    return span


def parse_step(text: str | None, span: Span) -> int:
    if not text:
        return span.days
    m = _DAYS.match(text.strip().lower())
    if text.strip().lower() == "week":
        return 7
    if m is None or int(m.group(1)) < 1:
        raise InvalidInput("step: a number of days such as 1d or 7d")
    step = int(m.group(1))
    if span.days / step > MAX_POINTS:
        raise InvalidInput(f"step: at most {MAX_POINTS} points per window; take a longer step")
    return step


# -- imports --------------------------------------------------------------------------------
def import_out(imp: CostImport) -> ImportOut:
    return ImportOut.model_validate(imp)


def import_detail(imp: CostImport) -> ImportDetail:
    return ImportDetail(
        **import_out(imp).model_dump(),
        rejected=[RejectedRow(**r) for r in imp.rejected or []],
    )


def imports_query(principal: Principal) -> Select[Any]:
    return readable(select(CostImport), CostImport, principal).order_by(CostImport.id.desc())


async def get_import(session: AsyncSession, principal: Principal, import_id: int) -> CostImport:
    return await get_readable(session, CostImport, import_id, principal, name="Cost import")


def team_for(principal: Principal, team_id: int | None) -> int:
    """The team a new object belongs to: the one given (if the caller is in it) or the
    caller's only team."""
    if team_id is not None:
        check_team_access(principal, team_id)
        return team_id
    if len(principal.team_ids) == 1:
        return next(iter(principal.team_ids))
    if not principal.team_ids:
        raise InvalidInput("You belong to no team: give team_id")
    raise InvalidInput("You belong to several teams: give team_id")


async def find_import(session: AsyncSession, team_id: int, sha256: str) -> CostImport | None:
    return await session.scalar(
        select(CostImport).where(CostImport.team_id == team_id, CostImport.sha256 == sha256)
    )


async def delete_import(session: AsyncSession, principal: Principal, import_id: int) -> CostImport:
    imp = await get_import(session, principal, import_id)
    if imp.status in ("queued", "running"):
        raise Conflict("The import is still running; wait for it to end")
    await session.execute(delete(CostLine).where(CostLine.import_id == imp.id))
    await session.delete(imp)
    await session.flush()
    return imp


# -- sums from the roll-ups -----------------------------------------------------------------
Key = tuple[str, str]  # (group key, currency)


async def rollup_sums(
    session: AsyncSession,
    principal: Principal,
    span: Span,
    dimension: str,
    *,
    by: str = "value",
    team_id: int | None = None,
    value: str | None = None,
    currency: str | None = None,
) -> dict[Key, tuple[int, int]]:
    """(key, currency) -> (billed, effective) in nano-units; `by` is value, team or day."""
    key = {"value": CostRollup.value, "team": CostRollup.team_id, "day": CostRollup.day}[by]
    stmt = (
        select(
            key,
            CostRollup.currency,
            func.sum(CostRollup.billed_cost),
            func.sum(CostRollup.effective_cost),
        )
        .where(
            CostRollup.dimension == dimension,
            CostRollup.day >= span.start,
            CostRollup.day < span.end,
        )
        .group_by(key, CostRollup.currency)
    )
    if team_id is not None:
        stmt = stmt.where(CostRollup.team_id == team_id)
    if value is not None:
        stmt = stmt.where(CostRollup.value == value)
    if currency is not None:
        stmt = stmt.where(CostRollup.currency == currency)
    rows = (await session.execute(readable(cast(Any, stmt), CostRollup, principal))).all()
    return {(str(k), cur): (int(b or 0), int(e or 0)) for k, cur, b, e in rows}


# -- backup storage -------------------------------------------------------------------------
@dataclass(frozen=True)
class PricedBackup:
    id: int
    team_id: int
    storage_id: int
    storage_name: str
    server_id: int | None
    database_name: str
    schedule_id: int | None
    size_bytes: int
    since: datetime
    price: int  # nano per GB-month
    currency: str

    def cost(self, start: datetime, end: datetime) -> int:
        """Nano-units for the part of [start, end) this backup was stored."""
        lo, hi = max(start, self.since), min(end, utcnow())
        if hi <= lo:
            return 0
        hours = (hi - lo).total_seconds() / 3600
        return round(self.size_bytes / GIB * self.price * hours / HOURS_PER_MONTH)

    @property
    def monthly(self) -> int:
        return round(self.size_bytes / GIB * self.price)


async def priced_backups(
    session: AsyncSession, principal: Principal, team_id: int | None = None
) -> tuple[list[PricedBackup], set[int]]:
    """Completed backups with their storage's price, and storage ids holding unpriced ones."""
    stmt = (
        select(Backup, StorageProvider.name, StoragePrice.price_per_gb_month, StoragePrice.currency)
        .join(StorageProvider, StorageProvider.id == Backup.storage_id)
        .outerjoin(StoragePrice, StoragePrice.storage_id == Backup.storage_id)
        .where(Backup.status == BackupStatus.COMPLETED, Backup.size_bytes.is_not(None))
    )
    if team_id is not None:
        stmt = stmt.where(Backup.team_id == team_id)
    rows = (await session.execute(readable(cast(Any, stmt), Backup, principal))).all()
    priced, unpriced = [], set()
    for backup, storage_name, price, cur in rows:
        if price is None:
            unpriced.add(backup.storage_id)
            continue
        priced.append(
            PricedBackup(
                id=backup.id,
                team_id=backup.team_id,
                storage_id=backup.storage_id,
                storage_name=storage_name,
                server_id=backup.server_id,
                database_name=backup.database_name,
                schedule_id=backup.schedule_id,
                size_bytes=int(backup.size_bytes or 0),
                since=backup.completed_at or backup.created_at,
                price=int(price),
                currency=cur,
            )
        )
    return priced, unpriced


def backup_sums(backups: Iterable[PricedBackup], span: Span, key: Any) -> dict[Key, int]:
    start, end = span.hours()
    sums: dict[Key, int] = defaultdict(int)
    for b in backups:
        sums[(str(key(b)), b.currency)] += b.cost(start, end)
    return sums


async def backup_costs(session: AsyncSession, principal: Principal, span: Span) -> BackupCostsOut:
    backups, unpriced = await priced_backups(session, principal)
    start, end = span.hours()

    def group(key: Any, fields: Any) -> list[BackupCostItem]:
        acc: dict[Key, list[Any]] = {}
        for b in backups:
            k = (str(key(b)), b.currency)
            entry = acc.setdefault(k, [0, 0, 0, 0, b])
            entry[0] += b.cost(start, end)
            entry[1] += b.monthly
            entry[2] += b.size_bytes
            entry[3] += 1
        items = [
            BackupCostItem(
                key=k,
                currency=cur,
                cost=amount(v[0]),
                monthly_cost=amount(v[1]),
                stored_bytes=v[2],
                backups=v[3],
                **fields(v[4]),
            )
            for (k, cur), v in acc.items()
        ]
        return sorted(items, key=lambda i: (i.currency, -i.cost, i.key))

    return BackupCostsOut(
        window=span.out(),
        by_provider=group(lambda b: b.storage_name, lambda b: {"storage_id": b.storage_id}),
        by_target=group(
            lambda b: f"server {b.server_id} / {b.database_name}",
            lambda b: {"server_id": b.server_id, "database_name": b.database_name},
        ),
        by_schedule=group(
            lambda b: f"schedule {b.schedule_id}" if b.schedule_id else "no schedule",
            lambda b: {"schedule_id": b.schedule_id},
        ),
        unpriced_storage_ids=sorted(unpriced),
    )


def price_out(provider: StorageProvider, price: StoragePrice | None) -> StoragePriceOut:
    return StoragePriceOut(
        storage_id=provider.id,
        storage_name=provider.name,
        storage_type=provider.type,
        team_id=provider.team_id,
        price_per_gb_month=amount(price.price_per_gb_month) if price else None,
        currency=price.currency if price else None,
        updated_at=price.updated_at if price else None,
    )


async def list_prices(session: AsyncSession, principal: Principal) -> list[StoragePriceOut]:
    stmt = readable(
        cast(
            Any,
            select(StorageProvider, StoragePrice)
            .outerjoin(StoragePrice, StoragePrice.storage_id == StorageProvider.id)
            .order_by(StorageProvider.id),
        ),
        StorageProvider,
        principal,
    )
    return [price_out(p, price) for p, price in (await session.execute(stmt)).all()]


async def set_price(
    session: AsyncSession, principal: Principal, storage_id: int, data: StoragePriceIn
) -> StoragePriceOut:
    provider = await get_readable(
        session, StorageProvider, storage_id, principal, name="Storage provider"
    )
    price = await session.scalar(select(StoragePrice).where(StoragePrice.storage_id == storage_id))
    if price is None:
        price = StoragePrice(storage_id=storage_id, team_id=provider.team_id)
        session.add(price)
    price.price_per_gb_month = to_nano(data.price_per_gb_month)
    price.currency = data.currency
    await session.flush()
    return price_out(provider, price)


# -- credits --------------------------------------------------------------------------------
@dataclass
class CreditUse:
    credit: CostCredit
    daily: dict[date, int]  # nano-units applied per day

    @property
    def applied(self) -> int:
        return sum(self.daily.values())

    def within(self, span: Span) -> int:
        return sum(v for d, v in self.daily.items() if span.start <= d < span.end)


async def credit_uses(
    session: AsyncSession, principal: Principal, credits: Iterable[CostCredit]
) -> list[CreditUse]:
    """Each credit consumes its provider's spending (in its currency) day after day from
    its start until it is used up or expires: the negative lines it adds."""
    uses = []
    for credit in credits:
        end = min(credit.expires_on, today()) + timedelta(days=1)
        daily: dict[date, int] = {}
        if end > credit.starts_on:
            span = Span(credit.starts_on, end)
            dimension, value = (
                ("provider", credit.provider) if credit.provider else ("category", None)
            )
            sums = await rollup_sums(
                session,
                principal,
                span,
                dimension,
                by="day",
                team_id=credit.team_id,
                value=value,
                currency=credit.currency,
            )
            per_day: dict[str, int] = defaultdict(int)
            for (day, _), (_, effective) in sums.items():
                per_day[day] += effective
            left = credit.amount
            for day in sorted(per_day):
                take = min(left, max(per_day[day], 0))
                if take:
                    daily[date.fromisoformat(day[:10])] = take
                    left -= take
                if left <= 0:
                    break
        uses.append(CreditUse(credit, daily))
    return uses


def credits_query(principal: Principal) -> Select[Any]:
    return readable(select(CostCredit), CostCredit, principal).order_by(
        CostCredit.expires_on, CostCredit.id
    )


def credit_out(use: CreditUse) -> CreditOut:
    c, applied = use.credit, use.applied
    now = today()
    remaining = c.amount - applied
    if c.expires_on < now:
        state = "expired"
    elif c.starts_on > now:
        state = "upcoming"
    elif remaining <= 0:
        state = "exhausted"
    else:
        state = "active"
    return CreditOut(
        id=c.id,
        team_id=c.team_id,
        name=c.name,
        provider=c.provider,
        amount=amount(c.amount),
        applied=amount(applied),
        remaining=amount(max(remaining, 0)),
        currency=c.currency,
        starts_on=c.starts_on,
        expires_on=c.expires_on,
        status=state,
        created_at=c.created_at,
    )


async def create_credit(session: AsyncSession, principal: Principal, data: CreditIn) -> CostCredit:
    if data.expires_on < data.starts_on:
        raise InvalidInput("expires_on must not be before starts_on")
    credit = CostCredit(
        team_id=team_for(principal, data.team_id),
        name=data.name,
        provider=data.provider,
        amount=to_nano(data.amount),
        currency=data.currency,
        starts_on=data.starts_on,
        expires_on=data.expires_on,
    )
    session.add(credit)
    await session.flush()
    return credit


async def get_credit(session: AsyncSession, principal: Principal, credit_id: int) -> CostCredit:
    return await get_readable(session, CostCredit, credit_id, principal, name="Credit")


# -- summary --------------------------------------------------------------------------------
async def _spend(
    session: AsyncSession, principal: Principal, span: Span, backups: list[PricedBackup]
) -> dict[str, list[int]]:
    """currency -> [billed, effective, imported effective, backup storage]."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for (_, cur), (billed, effective) in (
        await rollup_sums(session, principal, span, "category", by="team")
    ).items():
        acc = out[cur]
        acc[0] += billed
        acc[1] += effective
        acc[2] += effective
    for (_, cur), cost in backup_sums(backups, span, lambda b: "").items():
        acc = out[cur]
        acc[0] += cost
        acc[1] += cost
        acc[3] += cost
    return out


def change_percent(now: int, before: int) -> float | None:
    return None if before == 0 else round(100.0 * (now - before) / abs(before), 2)


def month_span(day: date) -> tuple[Span, int]:
    """Month to date (today included) and the number of days in the month."""
    return Span(day.replace(day=1), day + timedelta(days=1)), calendar.monthrange(
        day.year, day.month
    )[1]


def forecast(month_to_date: int, span: Span, days_in_month: int) -> int:
    return round(month_to_date / span.days * days_in_month)


async def summary(session: AsyncSession, principal: Principal, span: Span, step: int) -> SummaryOut:
    backups, _ = await priced_backups(session, principal)
    current = await _spend(session, principal, span, backups)
    before = await _spend(session, principal, span.previous(), backups)
    mtd_span, month_days = month_span(today())
    mtd = await _spend(session, principal, mtd_span, backups)
    credits = (await session.scalars(credits_query(principal))).all()
    applied: dict[str, int] = defaultdict(int)
    applied_mtd: dict[str, int] = defaultdict(int)
    for use in await credit_uses(session, principal, credits):
        applied[use.credit.currency] += use.within(span)
        applied_mtd[use.credit.currency] += use.within(mtd_span)
    totals = []
    for cur in sorted(set(current) | set(before) | set(mtd) | set(applied)):
        billed, effective, imported, storage = current.get(cur, [0, 0, 0, 0])
        prev = before.get(cur, [0, 0, 0, 0])[1]
        month_net = mtd.get(cur, [0, 0, 0, 0])[1] - applied_mtd[cur]
        totals.append(
            CurrencyTotal(
                currency=cur,
                billed_cost=amount(billed),
                effective_cost=amount(effective),
                imported_cost=amount(imported),
                backup_storage_cost=amount(storage),
                credits_applied=amount(applied[cur]),
                net_cost=amount(effective - applied[cur]),
                previous_cost=amount(prev),
                change=amount(effective - prev),
                change_percent=change_percent(effective, prev),
                month_to_date=amount(month_net),
                forecast_month=amount(forecast(month_net, mtd_span, month_days)),
            )
        )
    series = []
    start = span.start
    while start < span.end:
        part = Span(start, min(start + timedelta(days=step), span.end))
        for cur, acc in sorted((await _spend(session, principal, part, backups)).items()):
            series.append(
                StepPoint(
                    start=part.start, end=part.end, currency=cur, effective_cost=amount(acc[1])
                )
            )
        start = part.end
    return SummaryOut(
        window=span.out(),
        previous_window=span.previous().out(),
        step_days=step,
        totals=totals,
        series=series,
    )


# -- breakdown ------------------------------------------------------------------------------
def parse_aggregate(text: str) -> str:
    if text in AGGREGATES:
        return text
    if text.startswith("tag:") and 0 < len(text) - 4 <= 128:
        return text
    raise InvalidInput(f"aggregate: one of {', '.join(AGGREGATES)} or tag:<key>")


async def breakdown(
    session: AsyncSession, principal: Principal, span: Span, aggregate: str
) -> BreakdownOut:
    sums: dict[Key, list[int]] = defaultdict(lambda: [0, 0])

    def add(key: str, cur: str, billed: int, effective: int) -> None:
        acc = sums[(key, cur)]
        acc[0] += billed
        acc[1] += effective

    backups, _ = await priced_backups(session, principal)
    if aggregate == "team":
        names = {i: n for i, n in (await session.execute(select(Team.id, Team.name))).all()}
        for (team, cur), (b, e) in (
            await rollup_sums(session, principal, span, "category", by="team")
        ).items():
            add(names.get(int(team), team), cur, b, e)
        for (team, cur), cost in backup_sums(backups, span, lambda b: b.team_id).items():
            add(names.get(int(team), team), cur, cost, cost)
    else:
        for (key, cur), (b, e) in (await rollup_sums(session, principal, span, aggregate)).items():
            add(key or "(none)", cur, b, e)
        if aggregate.startswith("tag:"):
            # Lines without the tag: the total less what carries it.
            for (_, cur), (b, e) in (
                await rollup_sums(session, principal, span, "category", by="team")
            ).items():
                add("(untagged)", cur, b, e)
            for (key, cur), (b, e) in list(sums.items()):
                if key != "(untagged)":
                    add("(untagged)", cur, -b, -e)
            key_of: Any = lambda b: "(untagged)"  # noqa: E731
        else:
            key_of = {
                "service": lambda b: BACKUP_SERVICE,
                "provider": lambda b: b.storage_name,
                "category": lambda b: "Usage",
            }.get(aggregate, lambda b: "(none)")
        for (key, cur), cost in backup_sums(backups, span, key_of).items():
            add(key, cur, cost, cost)
    per_currency: dict[str, int] = defaultdict(int)
    for (_, cur), (_, e) in sums.items():
        per_currency[cur] += e
    items = [
        BreakdownItem(
            key=key,
            currency=cur,
            billed_cost=amount(b),
            effective_cost=amount(e),
            share_percent=round(100.0 * e / per_currency[cur], 2) if per_currency[cur] else 0.0,
        )
        for (key, cur), (b, e) in sums.items()
        if b or e
    ]
    items.sort(key=lambda i: (i.currency, -i.effective_cost, i.key))
    return BreakdownOut(
        window=span.out(),
        aggregate=aggregate,
        items=items,
        total=len(items),
        totals=[Money(currency=c, amount=amount(v)) for c, v in sorted(per_currency.items())],
    )


# -- budgets --------------------------------------------------------------------------------
def budgets_query(principal: Principal) -> Select[Any]:
    return readable(select(Budget), Budget, principal).order_by(Budget.name, Budget.id)


async def get_budget(session: AsyncSession, principal: Principal, budget_id: int) -> Budget:
    return await get_readable(session, Budget, budget_id, principal, name="Budget")


async def create_budget(session: AsyncSession, principal: Principal, data: BudgetIn) -> Budget:
    team_id = team_for(principal, data.team_id)
    if await session.scalar(
        select(Budget.id).where(Budget.team_id == team_id, Budget.name == data.name)
    ):
        raise Conflict(f"A budget named '{data.name}' exists in this team; pick another name")
    budget = Budget(
        team_id=team_id,
        name=data.name,
        service=data.service,
        amount=to_nano(data.amount),
        currency=data.currency,
        thresholds=data.thresholds,
        anomaly_percent=data.anomaly_percent,
    )
    session.add(budget)
    await session.flush()
    return budget


BudgetKey = tuple[int, str | None, str]  # team, service (None: the whole team), currency


def budget_key(budget: Budget) -> BudgetKey:
    return (budget.team_id, budget.service, budget.currency)


async def budgets_daily(
    session: AsyncSession, principal: Principal, budgets: Sequence[Budget], span: Span
) -> dict[BudgetKey, dict[date, int]]:
    """What each budget counts, per day of the span (nano-units, its currency), whatever
    the number of budgets in two queries: the span's roll-ups of the budgets' teams, and
    their priced backups where counted."""
    r = CostRollup
    services = {b.service for b in budgets if b.service}
    # A whole-team budget counts every line once: the category roll-ups, all values.
    wanted = r.dimension == "category"
    if services:
        wanted = or_(wanted, and_(r.dimension == "service", r.value.in_(services)))
    stmt = (
        select(r.team_id, r.dimension, r.value, r.currency, r.day, func.sum(r.effective_cost))
        .where(
            wanted,
            r.day >= span.start,
            r.day < span.end,
            r.team_id.in_({b.team_id for b in budgets}),
        )
        .group_by(r.team_id, r.dimension, r.value, r.currency, r.day)
    )
    daily: dict[BudgetKey, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for team, dimension, value, cur, day, effective in await session.execute(
        readable(cast(Any, stmt), CostRollup, principal)
    ):
        service = value if dimension == "service" else None
        daily[(int(team), service, cur)][day] += int(effective or 0)
    counted = [b for b in budgets if counts_backups(b)]
    if counted:
        backups, _ = await priced_backups(session, principal)
        for budget in counted:
            per_day = daily[budget_key(budget)]
            for day, cost in backup_daily(backups, budget, span).items():
                per_day[day] += cost
    return daily


def counts_backups(budget: Budget) -> bool:
    return budget.service in (None, BACKUP_SERVICE)


def backup_daily(backups: Iterable[PricedBackup], budget: Budget, span: Span) -> dict[date, int]:
    """The budget's backup storage cost per day up to today (nano-units, its currency)."""
    mine = [b for b in backups if b.team_id == budget.team_id and b.currency == budget.currency]
    daily: dict[date, int] = {}
    day = span.start
    while day < span.end and day <= today():
        cost = sum(backup_sums(mine, Span(day, day + timedelta(days=1)), lambda b: "").values())
        if cost:
            daily[day] = cost
        day += timedelta(days=1)
    return daily


async def budget_state(session: AsyncSession, principal: Principal, budget: Budget) -> BudgetOut:
    return (await budget_states(session, principal, [budget]))[0]


async def budget_states(
    session: AsyncSession, principal: Principal, budgets: Sequence[Budget]
) -> list[BudgetOut]:
    """Each budget's month so far, in at most two queries whatever the number of budgets."""
    if not budgets:
        return []
    mtd, days_in_month = month_span(today())
    daily = await budgets_daily(session, principal, budgets, mtd)
    return [
        _budget_out(budget, sum(daily[budget_key(budget)].values()), mtd, days_in_month)
        for budget in budgets
    ]


def _budget_out(budget: Budget, spent: int, mtd: Span, days_in_month: int) -> BudgetOut:
    projected = forecast(spent, mtd, days_in_month)
    percent = 100.0 * spent / budget.amount
    crossed = [t for t in budget.thresholds if percent >= t]
    state = "exceeded" if percent >= 100 else "warning" if crossed else "ok"
    return BudgetOut(
        id=budget.id,
        team_id=budget.team_id,
        name=budget.name,
        service=budget.service,
        amount=amount(budget.amount),
        currency=budget.currency,
        thresholds=budget.thresholds,
        anomaly_percent=budget.anomaly_percent,
        month=mtd.start.strftime("%Y-%m"),
        spent=amount(spent),
        forecast=amount(projected),
        percent_used=round(percent, 2),
        crossed=crossed,
        state=state,
        created_at=budget.created_at,
    )


TRAILING_DAYS = 14
MIN_TRAILING_DAYS = 3


async def evaluate_budgets(
    session: AsyncSession, principal: Principal, team_id: int | None = None
) -> list[tuple[str, dict[str, Any], int]]:
    """Thresholds newly crossed this month and spending above its trailing level, each
    told once: returns the events (type, data, team) to publish after the commit. All
    budgets are read in one grouped pass over the trailing days (the month included)."""
    stmt = budgets_query(principal)
    if team_id is not None:
        stmt = stmt.where(Budget.team_id == team_id)
    budgets = (await session.scalars(stmt)).all()
    if not budgets:
        return []
    mtd, days_in_month = month_span(today())
    span = Span(today() - timedelta(days=TRAILING_DAYS + 30), mtd.end)
    daily = await budgets_daily(session, principal, budgets, span)
    events: list[tuple[str, dict[str, Any], int]] = []
    for budget in budgets:
        per_day = daily[budget_key(budget)]
        spent = sum(v for d, v in per_day.items() if d >= mtd.start)
        state = _budget_out(budget, spent, mtd, days_in_month)
        base = {"budget_id": budget.id, "name": budget.name, "currency": budget.currency}
        top = max(state.crossed, default=None)
        if budget.alerted_month != state.month:
            budget.alerted_month, budget.alerted_threshold = state.month, None
        if top is not None and (budget.alerted_threshold or 0) < top:
            budget.alerted_threshold = top
            events.append(
                (
                    "finops.budget_threshold",
                    {
                        **base,
                        "threshold": top,
                        "spent": state.spent,
                        "amount": state.amount,
                        "percent_used": state.percent_used,
                        "state": state.state,
                        "severity": "error" if state.state == "exceeded" else "warning",
                    },
                    budget.team_id,
                )
            )
        anomaly = _anomaly(budget, {d: v for d, v in per_day.items() if v})
        if anomaly is not None:
            budget.anomaly_day = anomaly["day_date"]
            anomaly.pop("day_date")
            events.append(("finops.anomaly", {**base, **anomaly}, budget.team_id))
    await session.flush()
    return events


def _anomaly(budget: Budget, daily: dict[date, int]) -> dict[str, Any] | None:
    if not daily:
        return None
    last = max(daily)
    trailing = [v for d, v in daily.items() if last - timedelta(days=TRAILING_DAYS) <= d < last]
    if len(trailing) < MIN_TRAILING_DAYS or budget.anomaly_day == last:
        return None
    level = sum(trailing) / len(trailing)
    if level <= 0 or daily[last] <= level * (1 + budget.anomaly_percent / 100):
        return None
    return {
        "day": last.isoformat(),
        "day_date": last,
        "spent": amount(daily[last]),
        "trailing_level": amount(round(level)),
        "above_percent": round(100.0 * (daily[last] - level) / level, 1),
        "severity": "warning",
    }
