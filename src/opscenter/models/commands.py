"""Commands (seed 001): templates run on servers, their executions and per-target results;
runbooks (seed 004's SOPs): ordered steps, their versions, runs and step records."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin


class ResultStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class Command(IdMixin, TimestampMixin, Base):
    __tablename__ = "commands"
    __table_args__ = (UniqueConstraint("team_id", "name"), {"sqlite_autoincrement": True})

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    command_template: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16), default="shell")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Typed variable definitions: [{name, type, pattern, allowed_values, default, secret}].
    variables: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    timeout_seconds: Mapped[int] = mapped_column(default=300)
    #: sql: the database it runs in; without `writes` the session is read-only.
    database: Mapped[str | None] = mapped_column(String(200))
    writes: Mapped[bool] = mapped_column(default=False)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class CommandExecution(IdMixin, TimestampMixin, Base):
    """One run of a command on one or more servers (a job)."""

    __tablename__ = "command_executions"
    __table_args__ = (
        Index("ix_command_executions_command", "command_id", "id"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    # The record outlives its template: a deleted command leaves its executions.
    command_id: Mapped[int | None] = mapped_column(ForeignKey("commands.id", ondelete="SET NULL"))
    command_name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    #: The first target (seed 001 names one server per execution).
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id", ondelete="SET NULL"))
    #: As rendered, secret values masked.
    command_text: Mapped[str] = mapped_column(Text)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=ResultStatus.PENDING)
    exit_code: Mapped[int | None]
    stdout: Mapped[str] = mapped_column(Text, default="")
    stderr: Mapped[str] = mapped_column(Text, default="")
    timeout_seconds: Mapped[int] = mapped_column(default=300)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    executed_by: Mapped[str] = mapped_column(String(200), default="")
    executed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    #: Set when a runbook step ran it.
    sop_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("sop_runs.id", ondelete="SET NULL"), index=True
    )


class CommandResult(IdMixin, TimestampMixin, Base):
    """What one target did: exit code, output (capped here, whole in the log files)."""

    __tablename__ = "command_results"
    __table_args__ = ({"sqlite_autoincrement": True},)

    execution_id: Mapped[int] = mapped_column(
        ForeignKey("command_executions.id", ondelete="CASCADE"), index=True
    )
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id", ondelete="SET NULL"))
    server_name: Mapped[str] = mapped_column(String(200))
    environment: Mapped[str] = mapped_column(String(20), default="development")
    status: Mapped[str] = mapped_column(String(16), default=ResultStatus.PENDING)
    exit_code: Mapped[int | None]
    stdout: Mapped[str] = mapped_column(Text, default="")
    stderr: Mapped[str] = mapped_column(Text, default="")
    stdout_bytes: Mapped[int] = mapped_column(default=0)
    stderr_bytes: Mapped[int] = mapped_column(default=0)
    truncated: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(String(2000))
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    duration_seconds: Mapped[float | None] = mapped_column(Float)


class Sop(IdMixin, TimestampMixin, Base):
    """A runbook: ordered steps. Every change is a new version; a run keeps the one it ran."""

    __tablename__ = "sops"
    __table_args__ = (UniqueConstraint("team_id", "name"), {"sqlite_autoincrement": True})

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(4000), default="")
    category: Mapped[str] = mapped_column(String(100), default="")
    version: Mapped[int] = mapped_column(default=1)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: Default targets of its command steps.
    server_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    builtin: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class SopVersion(IdMixin, TimestampMixin, Base):
    __tablename__ = "sop_versions"
    __table_args__ = (UniqueConstraint("sop_id", "version"), {"sqlite_autoincrement": True})

    sop_id: Mapped[int] = mapped_column(ForeignKey("sops.id", ondelete="CASCADE"), index=True)
    version: Mapped[int]
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(4000), default="")
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    server_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(200), default="")


class SopRun(IdMixin, TimestampMixin, Base):
    """One execution of a runbook version: running, waiting (for a person), paused,
    completed, failed or cancelled."""

    __tablename__ = "sop_runs"
    __table_args__ = ({"sqlite_autoincrement": True},)

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    sop_id: Mapped[int | None] = mapped_column(
        ForeignKey("sops.id", ondelete="SET NULL"), index=True
    )
    sop_name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="running")
    current_step: Mapped[int] = mapped_column(default=0)
    server_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    paused: Mapped[bool] = mapped_column(default=False)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(String(2000))
    requested_by: Mapped[str] = mapped_column(String(200), default="")
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class SopStepRun(IdMixin, TimestampMixin, Base):
    __tablename__ = "sop_step_runs"
    __table_args__ = (UniqueConstraint("run_id", "position"), {"sqlite_autoincrement": True})

    run_id: Mapped[int] = mapped_column(ForeignKey("sop_runs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    #: The step as the run's version defined it (the runbook may change or go meanwhile).
    definition: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    actor: Mapped[str | None] = mapped_column(String(200))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(String(4000))
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    command_execution_id: Mapped[int | None] = mapped_column(
        ForeignKey("command_executions.id", ondelete="SET NULL")
    )
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
