"""Backup artifacts and the jobs that make, restore and verify them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class BackupStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    DELETING = "deleting"


class Job(IdMixin, TimestampMixin, Base):
    """The truth about every long action: queued -> running -> succeeded | failed |
    cancelled | interrupted, with progress, heartbeat, result and error."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_kind", "status", "kind"),)

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # backup, restore, verify, ...
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    phase: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[float | None] = mapped_column(Float)  # 0..100 when the total is known
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int | None] = mapped_column(BigInteger)
    # One job per target at a time, e.g. "server:3/db:sales".
    lock_key: Mapped[str | None] = mapped_column(String(300), index=True)
    resource_type: Mapped[str | None] = mapped_column(String(32))
    resource_id: Mapped[int | None]
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    worker: Mapped[str | None] = mapped_column(String(100))
    heartbeat_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Backup(IdMixin, TimestampMixin, Base):
    __tablename__ = "backups"
    __table_args__ = (
        Index("ix_backups_target", "server_id", "database_name", "status"),
        # The list filtered by server and status, newest first, reads its page off this.
        Index("ix_backups_server_status", "server_id", "status", "id"),
        # Analytics reads windows of time (the last week, the last 90 days) off this.
        Index("ix_backups_created", "created_at"),
        UniqueConstraint("storage_id", "storage_key"),
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    # Backups outlive their server: they stay restorable after it is removed.
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id", ondelete="SET NULL"))
    storage_id: Mapped[int] = mapped_column(
        ForeignKey("storage_providers.id", ondelete="RESTRICT"), index=True
    )
    schedule_id: Mapped[int | None] = mapped_column(index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    # A copy written from the same dump into another storage: the primary backup's id.
    copy_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("backups.id", ondelete="SET NULL"), index=True
    )
    database_name: Mapped[str] = mapped_column(String(4096))
    db_type: Mapped[str] = mapped_column(String(20))
    backup_type: Mapped[str] = mapped_column(String(20), default="full")
    status: Mapped[str] = mapped_column(String(16), default=BackupStatus.PENDING, index=True)
    storage_key: Mapped[str | None] = mapped_column(String(1024))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    original_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(80))  # "sha256:<hex>"
    is_encrypted: Mapped[bool] = mapped_column(default=True)
    compression_type: Mapped[str] = mapped_column(String(10), default="zstd")
    parallel_streams: Mapped[int] = mapped_column(default=1, server_default="1")
    encryption_key_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    row_counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    server_version: Mapped[str | None] = mapped_column(String(200))
    verification_status: Mapped[str] = mapped_column(String(20), default="unverified")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Taken in from outside (an upload, or an artifact found in storage), not made here.
    imported: Mapped[bool] = mapped_column(default=False, server_default=false())
