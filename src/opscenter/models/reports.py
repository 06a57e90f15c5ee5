"""Reports: one per (team, kind, period), each generation a new immutable version whose
file is kept in the team's storage under a generated key with its SHA-256."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.core.clock import utcnow
from opscenter.models.base import Base, IdMixin, TimestampMixin


class Report(IdMixin, TimestampMixin, Base):
    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("team_id", "kind", "period"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    period: Mapped[str] = mapped_column(String(32))  # canonical: 2026-11, 2026-Q4, 2026, a..b
    title: Mapped[str] = mapped_column(String(200))
    latest_version: Mapped[int] = mapped_column(default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class ReportVersion(IdMixin, Base):
    """Written only once the file is in storage: a failed job leaves no row."""

    __tablename__ = "report_versions"
    __table_args__ = (
        UniqueConstraint("report_id", "version"),
        Index("ix_report_versions_report_id_id", "report_id", "id"),
        {"sqlite_autoincrement": True},
    )

    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"))
    version: Mapped[int]
    format: Mapped[str] = mapped_column(String(8))
    title: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_id: Mapped[int] = mapped_column(ForeignKey("storage_providers.id", ondelete="RESTRICT"))
    storage_key: Mapped[str] = mapped_column(String(1024))
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), unique=True
    )
    generated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    generated_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
