"""Backup jobs that run elsewhere (seed 000's PowerShell scripts) and the reports they push.

A job's reports are its heartbeat: a job that misses `expected_interval_minutes` plus
`grace_minutes` is overdue (a dead man's switch), raised once per overdue period.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin


class ExternalJob(IdMixin, TimestampMixin, Base):
    __tablename__ = "external_jobs"
    # One job per name and host within a team: the same script on two hosts is two jobs.
    __table_args__ = (UniqueConstraint("team_id", "name", "host"),)

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(255), default="")
    expected_interval_minutes: Mapped[int]
    grace_minutes: Mapped[int]
    enabled: Mapped[bool] = mapped_column(default=True)
    last_report_at: Mapped[datetime | None]
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_success_at: Mapped[datetime | None]
    last_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Set when the overdue event was raised, cleared by the next report: one alert per period.
    overdue_since: Mapped[datetime | None]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class ExternalJobReport(IdMixin, TimestampMixin, Base):
    """One report as received; `created_at` is when it arrived."""

    __tablename__ = "external_job_reports"
    __table_args__ = (
        Index("ix_external_job_reports_job_created", "external_job_id", "created_at"),
    )

    external_job_id: Mapped[int] = mapped_column(ForeignKey("external_jobs.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))  # success | warning | failed | running
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(String(4000))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
