"""FinOps request and response models. Amounts are decimal numbers in their currency;
every figure carries its currency, and no figure ever adds two currencies together."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from opscenter.core.schemas import Id, InputModel, Name, NoControlChars, OutputModel, UtcDatetime

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), NoControlChars]
Amount = Annotated[Decimal, Field(ge=0, le=1_000_000_000, decimal_places=9)]
ImportFormat = Literal["focus", "aws_cur", "generic"]


class Money(OutputModel):
    currency: str
    amount: float


class Window(OutputModel):
    start: date = Field(description="First day (UTC)")
    end: date = Field(description="Day after the last one (exclusive)")
    days: int


# -- imports --------------------------------------------------------------------------------
class RejectedRow(OutputModel):
    line: int
    column: str | None
    reason: str


class ImportOut(OutputModel):
    id: int
    team_id: int
    filename: str
    format: str
    sha256: str
    size_bytes: int
    status: str
    rows_total: int
    rows_imported: int
    rows_rejected: int
    error: str | None
    job_id: int | None
    created_at: UtcDatetime
    completed_at: UtcDatetime | None


class ImportDetail(ImportOut):
    rejected: list[RejectedRow] = Field(description="The first 1000 rejected rows")


# -- summary and breakdown ------------------------------------------------------------------
class CurrencyTotal(OutputModel):
    currency: str
    billed_cost: float
    effective_cost: float
    imported_cost: float = Field(description="Effective cost of the imported lines")
    backup_storage_cost: float = Field(description="This platform's backup storage")
    credits_applied: float
    net_cost: float = Field(description="effective_cost minus credits_applied")
    previous_cost: float = Field(description="Effective cost of the window before")
    change: float
    change_percent: float | None
    month_to_date: float
    forecast_month: float = Field(description="Month-to-date spend run on to the month's end")


class StepPoint(OutputModel):
    start: date
    end: date
    currency: str
    effective_cost: float


class SummaryOut(OutputModel):
    window: Window
    previous_window: Window
    step_days: int
    totals: list[CurrencyTotal]
    series: list[StepPoint]


class BreakdownItem(OutputModel):
    key: str
    currency: str
    billed_cost: float
    effective_cost: float
    share_percent: float = Field(description="Share of its currency's total")


class BreakdownOut(OutputModel):
    window: Window
    aggregate: str
    items: list[BreakdownItem]
    total: int
    totals: list[Money]


# -- backup storage cost --------------------------------------------------------------------
class StoragePriceIn(InputModel):
    price_per_gb_month: Amount = Field(description="Per GB-month: 2^30 bytes kept 730 hours")
    currency: Currency


class StoragePriceOut(OutputModel):
    storage_id: int
    storage_name: str
    storage_type: str
    team_id: int
    price_per_gb_month: float | None
    currency: str | None
    updated_at: UtcDatetime | None


class BackupCostItem(OutputModel):
    key: str
    storage_id: int | None = None
    server_id: int | None = None
    database_name: str | None = None
    schedule_id: int | None = None
    currency: str
    cost: float
    monthly_cost: float = Field(description="What the bytes held now cost per month")
    stored_bytes: int
    backups: int


class BackupCostsOut(OutputModel):
    window: Window
    by_provider: list[BackupCostItem]
    by_target: list[BackupCostItem]
    by_schedule: list[BackupCostItem]
    unpriced_storage_ids: list[int] = Field(description="Storage holding backups with no price")


# -- credits --------------------------------------------------------------------------------
class CreditIn(InputModel):
    name: Name
    provider: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="Consumed by this provider's spending; empty: by any"
    )
    amount: Annotated[Decimal, Field(gt=0, le=1_000_000_000, decimal_places=9)]
    currency: Currency
    starts_on: date
    expires_on: date
    team_id: Id | None = None

    @field_validator("provider")
    @classmethod
    def _provider_text(cls, value: str | None) -> str | None:
        if value is not None and any(ord(ch) < 32 for ch in value):
            raise ValueError("no control characters")
        return value


class CreditOut(OutputModel):
    id: int
    team_id: int
    name: str
    provider: str | None
    amount: float
    applied: float
    remaining: float
    currency: str
    starts_on: date
    expires_on: date
    status: str = Field(description="active, upcoming, exhausted or expired")
    created_at: UtcDatetime


# -- budgets --------------------------------------------------------------------------------
class BudgetIn(InputModel):
    name: Name
    service: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="Only this service's spending; empty: the whole team's"
    )
    amount: Annotated[Decimal, Field(gt=0, le=1_000_000_000, decimal_places=9)]
    currency: Currency
    thresholds: list[Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=lambda: [50, 80, 100], max_length=10
    )
    anomaly_percent: int = Field(50, ge=1, le=10_000)
    team_id: Id | None = None

    @field_validator("thresholds")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("thresholds must be distinct")
        return sorted(value)


class BudgetOut(OutputModel):
    id: int
    team_id: int
    name: str
    service: str | None
    amount: float
    currency: str
    thresholds: list[int]
    anomaly_percent: int
    month: str
    spent: float
    forecast: float
    percent_used: float
    crossed: list[int]
    state: str = Field(description="ok, warning (a threshold crossed) or exceeded")
    created_at: UtcDatetime


# -- recommendations ------------------------------------------------------------------------
class RecommendationOut(OutputModel):
    id: int
    team_id: int
    rule: str
    subject_type: str
    subject_id: int | None
    title: str
    detail: str
    link: str
    estimated_monthly_saving: float
    currency: str
    status: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


class RefreshOut(OutputModel):
    open: int
    created: int
    resolved: int
    rules: list[str]
    skipped_rules: dict[str, Any]
