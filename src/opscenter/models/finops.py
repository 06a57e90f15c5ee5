"""FinOps: imported cost lines in FOCUS columns, their daily roll-ups, credits, budgets,
prices of backup storage and the recommendations computed from all of it.

Money is stored as integer nano-units (1e-9 of the currency): exact, summed as integers
on SQLite and PostgreSQL alike, and never a float."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin

#: Tag sets are expanded by key on PostgreSQL (jsonb_each_text); SQLite keeps JSON text.
TagsType = JSON().with_variant(JSONB(), "postgresql")


class ImportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class RecommendationStatus(StrEnum):
    OPEN = "open"
    DISMISSED = "dismissed"
    APPLIED = "applied"


class CostImport(IdMixin, TimestampMixin, Base):
    """One uploaded CSV file; the same content (sha256) is imported once per team."""

    __tablename__ = "cost_imports"
    __table_args__ = (UniqueConstraint("team_id", "sha256"), {"sqlite_autoincrement": True})

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(16))  # focus, aws_cur, generic
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=ImportStatus.QUEUED)
    rows_total: Mapped[int] = mapped_column(default=0)
    rows_imported: Mapped[int] = mapped_column(default=0)
    rows_rejected: Mapped[int] = mapped_column(default=0)
    # The first rejected rows: [{"line", "column", "reason"}], capped.
    rejected: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    completed_at: Mapped[datetime | None]


class CostLine(IdMixin, Base):
    """One normalised cost line (FOCUS 1.2 columns). Lines of an import that is not
    completed are invisible: every figure is read from `cost_rollups`, written only when
    the whole file went in."""

    __tablename__ = "cost_lines"
    __table_args__ = (
        # BRIN on PostgreSQL: an import's lines are appended together, and a btree here
        # cost a fifth of a million-line COPY.
        Index("ix_cost_lines_import_day", "import_id", "charge_day", postgresql_using="brin"),
        {"sqlite_autoincrement": True},
    )

    # No foreign keys here: checking two per line doubled the time of a million-line COPY.
    # Lines are written and deleted only with their import (importer, delete_import), and
    # carry their import's team; figures come from the roll-ups, which keep their keys.
    import_id: Mapped[int]
    team_id: Mapped[int]
    billing_period_start: Mapped[date] = mapped_column(Date)
    charge_period_start: Mapped[datetime]
    charge_period_end: Mapped[datetime]
    charge_day: Mapped[date] = mapped_column(Date)
    charge_category: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(200))
    service: Mapped[str] = mapped_column(String(200))
    resource_id: Mapped[str | None] = mapped_column(String(1024))
    resource_name: Mapped[str | None] = mapped_column(String(1024))
    region: Mapped[str | None] = mapped_column(String(100))
    environment: Mapped[str | None] = mapped_column(String(100))
    billed_cost: Mapped[int] = mapped_column(BigInteger)  # nano-units
    effective_cost: Mapped[int] = mapped_column(BigInteger)  # nano-units
    currency: Mapped[str] = mapped_column(String(3))
    # The number of the line's tag set in its import (CostTagSet): a bill repeats a few
    # tag sets, and a JSON value per line was a fifth of a million-line COPY.
    tag_set: Mapped[int]


class CostTagSet(Base):
    """One distinct set of tags of an import's lines, numbered from 1 within the import;
    only the roll-ups read it (expanded into tag:<key> dimensions)."""

    __tablename__ = "cost_tag_sets"

    import_id: Mapped[int] = mapped_column(
        ForeignKey("cost_imports.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    tags: Mapped[dict[str, str]] = mapped_column(TagsType)


class DailySums:
    """An import's sums of one day by one dimension's value, per currency: the columns a
    roll-up and a part of one share."""

    import_id: Mapped[int] = mapped_column(
        ForeignKey("cost_imports.id", ondelete="CASCADE"), index=True
    )
    day: Mapped[date] = mapped_column(Date)
    dimension: Mapped[str] = mapped_column(String(140))
    value: Mapped[str] = mapped_column(String(1024))
    currency: Mapped[str] = mapped_column(String(3))
    billed_cost: Mapped[int] = mapped_column(BigInteger)
    effective_cost: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[int] = mapped_column(BigInteger)


class CostRollup(IdMixin, DailySums, Base):
    """Daily sums of one completed import by one dimension (service, provider,
    environment, region, resource or tag:<key>), per currency: what summaries read."""

    __tablename__ = "cost_rollups"
    __table_args__ = (
        Index("ix_cost_rollups_dim_day", "dimension", "day", "team_id"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)


class CostRollupPart(IdMixin, DailySums, Base):
    """A running import's partial daily sums, one part per few tens of thousands of its
    lines, rolled up while the file is still being read; the import's last commit sums
    them into `cost_rollups` and removes them. Nothing reads them otherwise, so a running
    or failed import counts nowhere."""

    __tablename__ = "cost_rollup_parts"
    __table_args__ = ({"sqlite_autoincrement": True},)


class StoragePrice(IdMixin, TimestampMixin, Base):
    """What a GB-month (2^30 bytes for 730 hours) costs in one storage provider."""

    __tablename__ = "storage_prices"
    __table_args__ = ({"sqlite_autoincrement": True},)

    storage_id: Mapped[int] = mapped_column(
        ForeignKey("storage_providers.id", ondelete="CASCADE"), unique=True
    )
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    price_per_gb_month: Mapped[int] = mapped_column(BigInteger)  # nano-units
    currency: Mapped[str] = mapped_column(String(3))


class CostCredit(IdMixin, TimestampMixin, Base):
    """A credit (promotional, commitment, refund) consumed by a provider's spending."""

    __tablename__ = "cost_credits"
    __table_args__ = ({"sqlite_autoincrement": True},)

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(200))  # None: any provider
    amount: Mapped[int] = mapped_column(BigInteger)  # nano-units
    currency: Mapped[str] = mapped_column(String(3))
    starts_on: Mapped[date] = mapped_column(Date)
    expires_on: Mapped[date] = mapped_column(Date)  # last day it applies


class Budget(IdMixin, TimestampMixin, Base):
    """A monthly budget for a team's spending, or one service's, with alert thresholds."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("team_id", "name"), {"sqlite_autoincrement": True})

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    service: Mapped[str | None] = mapped_column(String(200))  # None: the whole team
    amount: Mapped[int] = mapped_column(BigInteger)  # nano-units per calendar month
    currency: Mapped[str] = mapped_column(String(3))
    thresholds: Mapped[list[int]] = mapped_column(JSON, default=list)  # percent of amount
    anomaly_percent: Mapped[int] = mapped_column(default=50)
    # What was already announced, so each crossing and each anomaly is told once.
    alerted_month: Mapped[str | None] = mapped_column(String(7))
    alerted_threshold: Mapped[int | None]
    anomaly_day: Mapped[date | None] = mapped_column(Date)


class Recommendation(IdMixin, TimestampMixin, Base):
    """One finding of a typed rule about one subject; its status survives refreshes."""

    __tablename__ = "cost_recommendations"
    __table_args__ = (
        UniqueConstraint("team_id", "rule", "subject_key"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    rule: Mapped[str] = mapped_column(String(40))
    subject_type: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[int | None]
    subject_key: Mapped[str] = mapped_column(String(300))
    title: Mapped[str] = mapped_column(String(500))
    detail: Mapped[str] = mapped_column(Text)
    link: Mapped[str] = mapped_column(String(300))
    monthly_saving: Mapped[int] = mapped_column(BigInteger)  # nano-units
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default=RecommendationStatus.OPEN)
    status_changed_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
