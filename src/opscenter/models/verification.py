"""Verification runs: one check of one backup (checksum, deep, or a restore test)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opscenter.models.backups import Backup
from opscenter.models.base import Base, IdMixin, TimestampMixin


class VerificationRun(IdMixin, TimestampMixin, Base):
    """queued -> running -> passed | corrupt | failed | cancelled | interrupted.

    `corrupt` means the artifact itself is damaged; `failed` means the check could not
    be made (storage or sandbox unreachable, a tool missing): the backup's
    verification_status is then left as it was."""

    __tablename__ = "verification_runs"
    __table_args__ = (
        Index("ix_verification_runs_backup_created", "backup_id", "created_at"),
        # Restore tests of a period (the dashboard's RTO figures) without reading every run.
        Index("ix_verification_runs_type_created", "test_type", "created_at"),
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    # The history of a backup's checks goes with the backup.
    backup_id: Mapped[int] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    test_type: Mapped[str] = mapped_column(String(16))  # checksum | deep | restore
    scope: Mapped[str] = mapped_column(String(16), default="full")  # full | sample
    trigger: Mapped[str] = mapped_column(String(16), default="manual")
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    target_server_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="SET NULL")
    )
    scratch_database: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text, default="")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    # Restore tests: the time from start of the restore to a loaded database (the RTO).
    rto_seconds: Mapped[float | None] = mapped_column(Float)
    # Restore tests: [{table, expected, actual, status}], the manifest's counts vs restored.
    table_comparison: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    backup: Mapped[Backup] = relationship(lazy="raise")
