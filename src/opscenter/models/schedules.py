"""Schedules (a backup job of seed 000, a backup policy of seed 002), the runs the
scheduler claimed for them, and retention policies."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin


class RetentionPolicy(IdMixin, TimestampMixin, Base):
    """Which completed backups to keep: the union of the rules, like restic's `forget`."""

    __tablename__ = "retention_policies"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    keep_last_n: Mapped[int | None]
    keep_days: Mapped[int | None]
    keep_daily: Mapped[int | None]
    keep_weekly: Mapped[int | None]
    keep_monthly: Mapped[int | None]
    keep_yearly: Mapped[int | None]
    min_keep: Mapped[int] = mapped_column(default=1)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class Schedule(IdMixin, TimestampMixin, Base):
    """One cron expression in one IANA timezone; `next_run` is the next slot, in UTC."""

    __tablename__ = "schedules"
    __table_args__ = (
        UniqueConstraint("team_id", "name"),
        Index("ix_schedules_due", "enabled", "next_run"),
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    # A schedule is nothing without its server: removing the server removes its schedules.
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    database_name: Mapped[str | None] = mapped_column(String(4096))
    source_path: Mapped[str | None] = mapped_column(String(4096))
    db_type: Mapped[str | None] = mapped_column(String(20))
    cron_expression: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    backup_type: Mapped[str] = mapped_column(String(20), default="full")
    retention_policy_id: Mapped[int | None] = mapped_column(
        ForeignKey("retention_policies.id", ondelete="RESTRICT"), index=True
    )
    retention_days: Mapped[int | None]
    # Destinations, in order: each run dumps once into the first and copies to the others.
    storage_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    parallel_streams: Mapped[int] = mapped_column(default=1, server_default="1")
    priority: Mapped[int] = mapped_column(default=5)
    enabled: Mapped[bool] = mapped_column(default=True)
    notify_on_success: Mapped[bool] = mapped_column(default=False)
    notify_on_failure: Mapped[bool] = mapped_column(default=True)
    misfire_policy: Mapped[str] = mapped_column(String(16), default="run_once")
    # Automatic verification: of every new backup (none | checksum | deep), and a restore
    # test of the newest completed backup every N days (None: never).
    verify_after: Mapped[str] = mapped_column(String(16), default="none", server_default="none")
    restore_test_every_days: Mapped[int | None]
    #: Where restore tests run (a sandbox); the backup's own server when unset.
    restore_test_server_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="SET NULL")
    )
    last_restore_test_at: Mapped[datetime | None]
    last_run: Mapped[datetime | None]
    next_run: Mapped[datetime | None]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class ScheduleRun(IdMixin, TimestampMixin, Base):
    """One run of a schedule. The unique (schedule_id, scheduled_for) is the claim: however
    many scheduler processes see a slot due, one INSERT wins and the others skip it.
    Manual runs have no slot (NULL, which never collides)."""

    __tablename__ = "schedule_runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "scheduled_for"),
        UniqueConstraint("schedule_id", "idempotency_key"),
    )

    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    scheduled_for: Mapped[datetime | None]
    trigger: Mapped[str] = mapped_column(String(16))  # scheduled | catch_up | manual
    # started -> the backup's end (completed | failed | cancelled | interrupted); or
    # skipped | failed when no backup started.
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(2000))
    missed: Mapped[int] = mapped_column(default=0)  # slots coalesced into this catch-up run
    notify: Mapped[bool | None]
    backup_id: Mapped[int | None] = mapped_column(ForeignKey("backups.id", ondelete="SET NULL"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
