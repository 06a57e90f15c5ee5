"""The CSV formats a cost file may come in, each mapped onto one normalised line in
FOCUS 1.2 columns: FOCUS itself, AWS Cost and Usage Report (CUR), and a generic format
(date, service, cost, currency) for anything else. No I/O here: a header picks the
format, and each row becomes a line or a rejection (line, column, reason)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

NANO = 9  # money is kept in nano-units (1e-9 of the currency)
MAX_AMOUNT = Decimal(1_000_000_000)  # per line; keeps sums far inside 64 bits
CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS = 128, 256, 50

#: A parsed line is a tuple: the values of LINE_COLUMNS in their order, then its tags (a
#: dict the lines of equal tags text share). A tuple, not a dict: it is built a million
#: times an import and goes to COPY as it is.
LINE_COLUMNS = (
    "billing_period_start",
    "charge_period_start",
    "charge_period_end",
    "charge_day",
    "charge_category",
    "provider",
    "service",
    "region",
    "environment",
    "currency",
    "resource_id",
    "resource_name",
    "billed_cost",
    "effective_cost",
)
Line = tuple[Any, ...]


class RowError(Exception):
    def __init__(self, column: str | None, reason: str) -> None:
        super().__init__(reason)
        self.column = column
        self.reason = reason


@dataclass(frozen=True)
class Groups:
    """Which columns of a row a format reads each part of its line from (positions in the
    row), for a reader that turns each distinct combination of texts into its part of the
    line once: the dates and times (billing period start, charge period start and end, the
    charge day) come from the `times` columns alone; the names (category, provider,
    service, region, currency) from the `names` columns alone; the environment and the
    tags from the `tags` column alone (None: the file has none); each check of a row looks
    at one of these groups only. The rest is read per row: the resource id and name (None:
    no such column) as `row_parser` reads them (stripped, at most 1024 characters, None
    when empty), the amounts with `money`. So a row whose three groups of texts were
    parsed before without a rejection, and whose amounts are plain numbers, is the line
    the parser would make from those parts: the parser need not run."""

    times: tuple[int, ...]
    names: tuple[int, ...]
    tags: int | None
    resource_id: int | None
    resource_name: int | None
    billed: int
    effective: int


@dataclass(frozen=True)
class Format:
    name: str
    label: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    #: Builds the row parser from the header's column positions (lower-cased names).
    parser: Callable[[dict[str, int]], Callable[[Sequence[str]], Line]]
    #: Where the parser reads each group of a line from (a format with none: None).
    groups: Callable[[dict[str, int]], Groups] | None = None


# -- field parsers --------------------------------------------------------------------------
_LIMIT = int(MAX_AMOUNT.scaleb(NANO))


SCALE: tuple[int, ...] = tuple(10 ** (NANO - n) for n in range(NANO + 1))  # by decimals


def money(text: str, column: str) -> int:
    # Plain "123.45" (almost every amount) without Decimal: its digits as one integer,
    # scaled to nano-units. At most 9 digits before the point stay under the limit.
    whole, _, fraction = text.partition(".")
    if 0 < len(whole) <= 9 and len(fraction) <= NANO:
        digits = whole + fraction
        if digits.isdigit() and digits.isascii():
            return int(digits) * SCALE[len(fraction)]
    try:
        nano = int(Decimal(text).scaleb(NANO).to_integral_value(ROUND_HALF_EVEN))
    except (InvalidOperation, ValueError, OverflowError):  # not a number, NaN, Infinity
        raise RowError(column, f"'{text[:40]}' is not a finite number") from None
    if not -_LIMIT < nano < _LIMIT:
        raise RowError(column, "is out of range (at most 1e9 per line)")
    return nano


def currency(text: str, column: str) -> str:
    code = text.strip().upper()
    if not CURRENCY.match(code):
        raise RowError(column, f"'{text[:20]}' is not an ISO 4217 currency code")
    return code


class Times:
    """ISO 8601 timestamps, parsed once per distinct text (a bill repeats a few hours)."""

    def __init__(self) -> None:
        self.seen: dict[str, datetime] = {}

    def __call__(self, text: str, column: str) -> datetime:
        found = self.seen.get(text)
        if found is not None:
            return found
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError:
            raise RowError(column, f"'{text[:40]}' is not an ISO 8601 date or time") from None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if len(self.seen) > 10_000:
            self.seen.clear()
        self.seen[text] = value
        return value


def text(value: str, limit: int) -> str | None:
    value = value.strip()
    return value[:limit] if value else None


def clean_tags(raw: dict[str, Any], column: str) -> dict[str, str]:
    if len(raw) > MAX_TAGS:
        raise RowError(column, f"more than {MAX_TAGS} tags")
    tags: dict[str, str] = {}
    for key, value in raw.items():
        key = str(key).strip()
        if not key or len(key) > MAX_TAG_KEY:
            raise RowError(column, f"tag keys are 1 to {MAX_TAG_KEY} characters")
        tags[key] = "" if value is None else str(value)[:MAX_TAG_VALUE]
    return tags


def environment_of(tags: dict[str, str]) -> str | None:
    return text(tags.get("environment") or tags.get("env") or "", 100)


def _line(
    *,
    billing: date,
    start: datetime,
    end: datetime,
    category: str,
    provider: str | None,
    service: str | None,
    service_column: str,
    resource_id: str | None,
    resource_name: str | None,
    region: str | None,
    environment: str | None,
    billed: int,
    effective: int,
    code: str,
    tags: dict[str, str],
) -> Line:
    if end < start:
        raise RowError(None, "the charge period ends before it starts")
    if not service:
        raise RowError(service_column, "is empty")
    return (
        billing,
        start,
        end,
        start.date(),
        category,
        provider or "(unknown)",
        service,
        region,
        environment,
        code,
        resource_id,
        resource_name,
        billed,
        effective,
        tags,
    )


def _getter(columns: dict[str, int]) -> Callable[[Sequence[str], str], str]:
    def get(row: Sequence[str], name: str) -> str:
        index = columns.get(name)
        return row[index] if index is not None else ""

    return get


# -- FOCUS 1.2 ------------------------------------------------------------------------------
FOCUS_CATEGORIES = {"usage", "purchase", "tax", "credit", "adjustment"}


def _focus(columns: dict[str, int]) -> Callable[[Sequence[str]], Line]:
    # The hot loop of an import (a million rows): one function, no per-field calls. A bill
    # repeats few distinct texts in most columns (timestamps, categories, services,
    # regions, currencies, tag sets), so each column keeps what each distinct text parsed
    # to (a dict of its own: a lookup, no key to build); only the amounts and resource ids
    # are read anew per row. The checks run in the order of the columns' reasons.
    when = Times()
    times = when.seen
    seen_tags: dict[str, tuple[dict[str, str], str | None]] = {}
    categories: dict[str, str] = {}
    billings: dict[str, date] = {}
    providers: dict[str, str | None] = {}
    services: dict[str, str | None] = {}
    regions: dict[str, str | None] = {}
    currencies: dict[str, str] = {}
    # Column positions; a column the file lacks reads the empty cell appended to each row.
    at = {name: columns.get(name, -1) for name in _FOCUS_COLUMNS}
    category_at, tags_at, billing_at = at["chargecategory"], at["tags"], at["billingperiodstart"]
    start_at, end_at, service_at = at["chargeperiodstart"], at["chargeperiodend"], at["servicename"]
    provider_at, old_provider_at = at["serviceprovidername"], at["providername"]
    resource_at, name_at = at["resourceid"], at["resourcename"]
    region_at, region_name_at = at["regionid"], at["regionname"]
    billed_at, effective_at, currency_at = (
        at["billedcost"],
        at["effectivecost"],
        at["billingcurrency"],
    )
    missing = object()

    def remembered(seen: dict[str, Any], key: str, value: Any) -> Any:
        if len(seen) > 10_000:
            seen.clear()
        seen[key] = value
        return value

    def parse(row: Sequence[str]) -> Line:
        row = [*row, ""]
        raw = row[category_at]
        category = categories.get(raw)
        if category is None:
            name = raw.strip() or "Usage"
            if name.lower() not in FOCUS_CATEGORIES:
                raise RowError("ChargeCategory", f"'{name[:30]}' is not a FOCUS charge category")
            category = remembered(categories, raw, name.capitalize())
        raw = row[tags_at]
        tagged = seen_tags.get(raw)
        if tagged is None:
            raw_tags = raw.strip()
            try:
                loaded = json.loads(raw_tags) if raw_tags else {}
            except ValueError:
                raise RowError("Tags", "is not a JSON object") from None
            if not isinstance(loaded, dict):
                raise RowError("Tags", "is not a JSON object")
            tags = clean_tags(loaded, "Tags")
            tagged = remembered(seen_tags, raw, (tags, environment_of(tags)))
        raw = row[billing_at]
        billing = billings.get(raw)
        if billing is None:
            billing = remembered(billings, raw, when(raw, "BillingPeriodStart").date())
        raw = row[start_at]
        start = times.get(raw) or when(raw, "ChargePeriodStart")
        raw = row[end_at]
        end = times.get(raw) or when(raw, "ChargePeriodEnd")
        raw = row[provider_at] or row[old_provider_at]
        provider = providers.get(raw, missing)
        if provider is missing:
            provider = remembered(providers, raw, text(raw, 200) or "(unknown)")
        raw = row[service_at]
        service = services.get(raw, missing)
        if service is missing:
            service = remembered(services, raw, text(raw, 200))
        raw = row[region_at] or row[region_name_at]
        region = regions.get(raw, missing)
        if region is missing:
            region = remembered(regions, raw, text(raw, 100))
        resource_id = row[resource_at].strip()[:1024] or None
        resource_name = row[name_at].strip()[:1024] or None
        billed = money(row[billed_at], "BilledCost")
        effective = money(row[effective_at], "EffectiveCost")
        raw = row[currency_at]
        code = currencies.get(raw)
        if code is None:
            code = remembered(currencies, raw, currency(raw, "BillingCurrency"))
        if end < start:
            raise RowError(None, "the charge period ends before it starts")
        if not service:
            raise RowError("ServiceName", "is empty")
        tags, environment = tagged
        # `_line`'s checks and tuple, written out here: a call per row of a million-row
        # import costs more than its parsing saves.
        return (
            billing,
            start,
            end,
            start.date(),
            category,
            provider,
            service,
            region,
            environment,
            code,
            resource_id,
            resource_name,
            billed,
            effective,
            tags,
        )

    return parse


def _focus_groups(columns: dict[str, int]) -> Groups:
    def present(*names: str) -> tuple[int, ...]:
        return tuple(columns[n] for n in names if n in columns)

    return Groups(
        times=present("billingperiodstart", "chargeperiodstart", "chargeperiodend"),
        names=present(
            "chargecategory",
            "serviceprovidername",
            "providername",
            "servicename",
            "regionid",
            "regionname",
            "billingcurrency",
        ),
        tags=columns.get("tags"),
        resource_id=columns.get("resourceid"),
        resource_name=columns.get("resourcename"),
        billed=columns["billedcost"],
        effective=columns["effectivecost"],
    )


_FOCUS_COLUMNS = (
    "chargecategory",
    "tags",
    "billingperiodstart",
    "chargeperiodstart",
    "chargeperiodend",
    "servicename",
    "serviceprovidername",
    "providername",
    "resourceid",
    "resourcename",
    "regionid",
    "regionname",
    "billedcost",
    "effectivecost",
    "billingcurrency",
)


# -- AWS Cost and Usage Report (CUR) --------------------------------------------------------
CUR_CATEGORIES = {
    "credit": "Credit",
    "refund": "Adjustment",
    "tax": "Tax",
    "fee": "Purchase",
    "rifee": "Purchase",
    "savingsplanrecurringfee": "Purchase",
    "savingsplanupfrontfee": "Purchase",
}
CUR_EFFECTIVE = ("savingsplan/savingsplaneffectivecost", "reservation/effectivecost")


def _cur(columns: dict[str, int]) -> Callable[[Sequence[str]], Line]:
    get, when = _getter(columns), Times()
    tag_columns = [
        (name.removeprefix("resourcetags/").removeprefix("user:"), index)
        for name, index in columns.items()
        if name.startswith("resourcetags/")
    ]

    def parse(row: Sequence[str]) -> Line:
        start = when(get(row, "lineitem/usagestartdate"), "lineItem/UsageStartDate")
        billing_text = get(row, "bill/billingperiodstartdate")
        billing = (
            when(billing_text, "bill/BillingPeriodStartDate").date()
            if billing_text.strip()
            else start.date().replace(day=1)
        )
        billed = money(get(row, "lineitem/unblendedcost"), "lineItem/UnblendedCost")
        line_type = get(row, "lineitem/lineitemtype").strip()
        effective = billed
        # Usage a commitment covers costs its effective (amortised) figure, not list price.
        for name in CUR_EFFECTIVE:
            if get(row, name).strip() and line_type.endswith("CoveredUsage"):
                effective = money(get(row, name), name)
        tags = clean_tags(
            {key: row[index] for key, index in tag_columns if row[index].strip()},
            "resourceTags",
        )
        return _line(
            billing=billing,
            start=start,
            end=when(get(row, "lineitem/usageenddate"), "lineItem/UsageEndDate"),
            category=CUR_CATEGORIES.get(line_type.lower(), "Usage"),
            provider="AWS",
            service=text(get(row, "product/productname") or get(row, "lineitem/productcode"), 200),
            service_column="lineItem/ProductCode",
            resource_id=text(get(row, "lineitem/resourceid"), 1024),
            resource_name=None,
            region=text(get(row, "product/regioncode") or get(row, "product/region"), 100),
            environment=environment_of(tags),
            billed=billed,
            effective=effective,
            code=currency(get(row, "lineitem/currencycode"), "lineItem/CurrencyCode"),
            tags=tags,
        )

    return parse


# -- generic --------------------------------------------------------------------------------
def _generic(columns: dict[str, int]) -> Callable[[Sequence[str]], Line]:
    get, when = _getter(columns), Times()
    tag_columns = [
        (name.removeprefix("tag:"), index) for name, index in columns.items() if name[:4] == "tag:"
    ]

    def parse(row: Sequence[str]) -> Line:
        day = when(get(row, "date"), "date")
        raw: dict[str, Any] = {}
        for pair in filter(None, (p.strip() for p in get(row, "tags").split(";"))):
            key, sep, value = pair.partition("=")
            if not sep:
                raise RowError("tags", "write tags as key=value;key=value")
            raw[key] = value.strip()
        raw.update({key: row[index] for key, index in tag_columns if row[index].strip()})
        tags = clean_tags(raw, "tags")
        billed = money(get(row, "cost"), "cost")
        effective_text = get(row, "effective_cost")
        return _line(
            billing=day.date().replace(day=1),
            start=day,
            end=day + timedelta(days=1),
            category=(get(row, "category").strip() or "Usage").capitalize()[:32],
            provider=text(get(row, "provider"), 200),
            service=text(get(row, "service"), 200),
            service_column="service",
            resource_id=text(get(row, "resource"), 1024),
            resource_name=None,
            region=text(get(row, "region"), 100),
            environment=text(get(row, "environment"), 100) or environment_of(tags),
            billed=billed,
            effective=money(effective_text, "effective_cost") if effective_text.strip() else billed,
            code=currency(get(row, "currency"), "currency"),
            tags=tags,
        )

    return parse


FORMATS: dict[str, Format] = {
    "focus": Format(
        "focus",
        "FOCUS 1.2",
        (
            "BillingPeriodStart",
            "ChargePeriodStart",
            "ChargePeriodEnd",
            "BilledCost",
            "EffectiveCost",
            "BillingCurrency",
            "ServiceName",
        ),
        (
            "ChargeCategory",
            "ServiceProviderName",
            "ProviderName",
            "ResourceId",
            "ResourceName",
            "RegionId",
            "RegionName",
            "Tags",
        ),
        _focus,
        _focus_groups,
    ),
    "aws_cur": Format(
        "aws_cur",
        "AWS Cost and Usage Report",
        (
            "lineItem/UsageStartDate",
            "lineItem/UsageEndDate",
            "lineItem/UnblendedCost",
            "lineItem/CurrencyCode",
            "lineItem/ProductCode",
        ),
        ("bill/BillingPeriodStartDate", "lineItem/LineItemType", "product/ProductName"),
        _cur,
    ),
    "generic": Format(
        "generic",
        "generic (date, service, cost, currency)",
        ("date", "service", "cost", "currency"),
        ("effective_cost", "provider", "resource", "region", "environment", "category", "tags"),
        _generic,
    ),
}


def missing(fmt: Format, header: Sequence[str]) -> list[str]:
    names = {h.strip().lower() for h in header}
    return [c for c in fmt.required if c.lower() not in names]


def detect(header: Sequence[str]) -> Format | None:
    return next((f for f in FORMATS.values() if not missing(f, header)), None)


def _columns(header: Sequence[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        columns.setdefault(name.strip().lower(), index)
    return columns


def row_parser(fmt: Format, header: Sequence[str]) -> Callable[[Sequence[str]], Line]:
    return fmt.parser(_columns(header))


def row_groups(fmt: Format, header: Sequence[str]) -> Groups | None:
    return None if fmt.groups is None else fmt.groups(_columns(header))
