"""Analytics: dismissed insights (so a dismissed anomaly stays dismissed when the insights
are computed again) and saved custom reports with every generated version."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.core.clock import utcnow
from opscenter.models.base import Base, IdMixin, TimestampMixin


class InsightDismissal(IdMixin, Base):
    """An insight someone dismissed, keyed by its fingerprint: sha256 of its kind, its
    subject and the anomalous data point, so the same anomaly found again is still known."""

    __tablename__ = "analytics_dismissals"
    __table_args__ = (UniqueConstraint("team_id", "fingerprint"), {"sqlite_autoincrement": True})

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text, default="")
    dismissed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    dismissed_at: Mapped[datetime] = mapped_column(default=utcnow)


class AnalyticsReport(IdMixin, TimestampMixin, Base):
    """A saved selection of metrics, filters and grouping, generated on demand or on a
    cron schedule (`next_run_at` is its next slot in UTC)."""

    __tablename__ = "analytics_reports"
    __table_args__ = (
        UniqueConstraint("team_id", "name"),
        Index("ix_analytics_reports_next_run", "next_run_at"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    metrics: Mapped[list[str]] = mapped_column(JSON, default=list)
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    group_by: Mapped[str] = mapped_column(String(16))
    window: Mapped[str] = mapped_column(String(16))
    schedule: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    next_run_at: Mapped[datetime | None]
    last_version: Mapped[int] = mapped_column(default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class AnalyticsReportResult(IdMixin, Base):
    """One generation of a report: its rows as they were then, numbered per report."""

    __tablename__ = "analytics_report_results"
    __table_args__ = (
        UniqueConstraint("report_id", "version"),
        {"sqlite_autoincrement": True},
    )

    report_id: Mapped[int] = mapped_column(
        ForeignKey("analytics_reports.id", ondelete="CASCADE"), index=True
    )
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    version: Mapped[int]
    trigger: Mapped[str] = mapped_column(String(16))  # manual | schedule
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    rows: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Lists of versions show it without reading the rows themselves.
    row_count: Mapped[int] = mapped_column(default=0)
    generated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    generated_at: Mapped[datetime] = mapped_column(default=utcnow)
