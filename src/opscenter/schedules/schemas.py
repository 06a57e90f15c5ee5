from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from opscenter.backups.schemas import (
    MAX_DESTINATIONS,
    PARALLEL_STREAMS_DOC,
    DatabaseName,
    ParallelStreams,
)
from opscenter.core import cron
from opscenter.core.schemas import Id, InputModel, Name, NoControlChars, OutputModel, UtcDatetime

TIME_RULES = (
    "Stored as one cron expression (5 fields: minute hour day-of-month month day-of-week) "
    "in one IANA timezone; next_run is computed in UTC. Seed 000's schedule_type "
    "(daily|weekly|monthly) + schedule_time 'HH:MM' (+ day_of_week 0=Sunday..6, "
    "day_of_month 1..28) are converted to cron, and responses show both views. "
    "DST: a schedule with a fixed minute and hour (daily or longer) runs once per local "
    "date: a time inside the spring-forward gap runs once, at the first minute after the "
    "gap (02:30 -> 03:00 local); a time that occurs twice at the fall-back overlap runs "
    "once, at its first occurrence. Schedules with '*' or a step in the minute or hour "
    "field follow elapsed time through transitions. Missed runs (opscenter was down): "
    "misfire_policy 'run_once' (default) makes one coalesced catch-up run as soon as "
    "possible, then the schedule resumes; 'skip' records the missed slot as skipped and "
    "waits for the next one. A slot never runs twice and a schedule never runs twice at "
    "once: a slot that comes while the previous run's job is still queued or running is "
    "recorded as skipped."
)

Description = Annotated[str, StringConstraints(max_length=2000), NoControlChars]
CronText = Annotated[str, StringConstraints(min_length=1, max_length=400)]
TimezoneName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ScheduleType = Literal["daily", "weekly", "monthly"]
ClockTime = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
Weekday = Annotated[int, Field(ge=0, le=6, description="0 = Sunday ... 6 = Saturday")]
MonthDay = Annotated[int, Field(ge=1, le=28, description="1..28 (use cron 'L' for the last)")]
Priority = Annotated[int, Field(ge=1, le=10, description="1..10; higher runs first in a tick")]
MisfirePolicy = Literal["run_once", "skip"]
VerifyAfter = Literal["none", "checksum", "deep"]
RestoreTestDays = Annotated[int, Field(ge=1, le=366)]
VERIFY_AFTER_DOC = "Check each new backup: none, checksum (size + sha256), deep (whole dump)"
RESTORE_TEST_DOC = (
    "Restore-test the newest completed backup every N days into a scratch database "
    "(PostgreSQL and MySQL); null: never"
)
StorageIds = Annotated[list[Id], Field(min_length=1, max_length=MAX_DESTINATIONS)]


class _TimeFields(InputModel):
    cron_expression: CronText | None = Field(
        None, description="e.g. '0 2 * * *'; or give schedule_type + schedule_time"
    )
    timezone: TimezoneName | None = Field(None, description="IANA name; default UTC")
    schedule_type: ScheduleType | None = Field(None, description="Seed 000: converted to cron")
    schedule_time: ClockTime | None = Field(None, description="Seed 000: 'HH:MM', local time")
    day_of_week: Weekday | None = Field(None, description="weekly: 0 = Sunday (default)")
    day_of_month: MonthDay | None = Field(None, description="monthly: 1..28 (default 1)")

    @field_validator("cron_expression")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else cron.normalize(value)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        if value is not None:
            cron.zone(value)
        return value

    @model_validator(mode="after")
    def _time_shape(self) -> _TimeFields:
        seed000 = [
            f
            for f in ("schedule_type", "schedule_time", "day_of_week", "day_of_month")
            if getattr(self, f) is not None
        ]
        if self.cron_expression is not None and seed000:
            raise ValueError(f"give cron_expression or {', '.join(seed000)}, not both")
        if self.day_of_week is not None and self.schedule_type not in (None, "weekly"):
            raise ValueError("day_of_week applies to weekly schedules")
        if self.day_of_month is not None and self.schedule_type not in (None, "monthly"):
            raise ValueError("day_of_month applies to monthly schedules")
        return self


SANDBOX_DOC = (
    "The server the restore tests run on (a sandbox of the same engine in the same team), "
    "so they never load the source; default: the backup's own server"
)


class ScheduleCreate(_TimeFields):
    __doc__ = TIME_RULES

    name: Name
    description: Description = ""
    server_id: Id | None = Field(
        None, description="Default, with a source_path: the 'this host' server (seed 000)"
    )
    database_name: DatabaseName | None = Field(
        None, description="Database to back up; for `sqlite` a file and for `local` a path"
    )
    source_path: DatabaseName | None = Field(
        None, description="Seed 000: a file or directory to back up (instead of database_name)"
    )
    db_type: str | None = Field(None, max_length=20, description="For hosts: which engine")
    backup_type: str = Field("full", pattern="^full$")
    retention_policy_id: Id | None = None
    retention_days: Annotated[int, Field(ge=1, le=36_500)] | None = Field(
        None, description="Seed 000: keep backups this many days (when no retention policy)"
    )
    storage_ids: StorageIds | None = Field(
        None,
        description="Destinations: each run dumps once and writes the backup to the first "
        "and a copy to each other one (tracked and verified on its own). "
        "Default: the team's default storage",
    )
    priority: Priority = 5
    parallel_streams: ParallelStreams = Field(1, description=PARALLEL_STREAMS_DOC)
    enabled: bool | None = Field(None, description="Default true")
    is_active: bool | None = Field(None, description="Seed 000's name for enabled")
    notify_on_success: bool = False
    notify_on_failure: bool = True
    misfire_policy: MisfirePolicy = "run_once"
    verify_after: VerifyAfter = Field("none", description=VERIFY_AFTER_DOC)
    restore_test_every_days: RestoreTestDays | None = Field(None, description=RESTORE_TEST_DOC)
    restore_test_server_id: Id | None = Field(None, description=SANDBOX_DOC)

    @model_validator(mode="after")
    def _create_shape(self) -> ScheduleCreate:
        if (self.database_name is None) == (self.source_path is None):
            raise ValueError("give database_name, or source_path for files and directories")
        if self.cron_expression is None and self.schedule_type is None:
            raise ValueError("give cron_expression, or schedule_type and schedule_time")
        if self.schedule_type is not None and self.schedule_time is None:
            raise ValueError("schedule_type needs schedule_time ('HH:MM')")
        if self.retention_policy_id is not None and self.retention_days is not None:
            raise ValueError("give retention_policy_id or retention_days, not both")
        _active(self.enabled, self.is_active)
        return self


class ScheduleUpdate(_TimeFields):
    """Only the fields given change. Changing the time or timezone recomputes next_run."""

    name: Name | None = None
    description: Description | None = None
    server_id: Id | None = None
    database_name: DatabaseName | None = None
    source_path: DatabaseName | None = None
    db_type: str | None = Field(None, max_length=20)
    backup_type: str | None = Field(None, pattern="^full$")
    retention_policy_id: Id | None = None
    retention_days: Annotated[int, Field(ge=1, le=36_500)] | None = None
    storage_ids: StorageIds | None = None
    priority: Priority | None = None
    parallel_streams: ParallelStreams | None = Field(None, description=PARALLEL_STREAMS_DOC)
    enabled: bool | None = None
    is_active: bool | None = None
    notify_on_success: bool | None = None
    notify_on_failure: bool | None = None
    misfire_policy: MisfirePolicy | None = None
    verify_after: VerifyAfter | None = Field(None, description=VERIFY_AFTER_DOC)
    restore_test_every_days: RestoreTestDays | None = Field(None, description=RESTORE_TEST_DOC)
    restore_test_server_id: Id | None = Field(None, description=SANDBOX_DOC)

    @model_validator(mode="after")
    def _update_shape(self) -> ScheduleUpdate:
        if self.database_name is not None and self.source_path is not None:
            raise ValueError("give database_name or source_path, not both")
        if self.retention_policy_id is not None and self.retention_days is not None:
            raise ValueError("give retention_policy_id or retention_days, not both")
        _active(self.enabled, self.is_active)
        return self


def _active(enabled: bool | None, is_active: bool | None) -> None:
    if enabled is not None and is_active is not None and enabled != is_active:
        raise ValueError("enabled and is_active are the same setting; they disagree")


class ScheduleOut(OutputModel):
    __doc__ = TIME_RULES

    id: int
    team_id: int
    name: str
    description: str
    server_id: int
    database_name: str | None
    source_path: str | None
    db_type: str | None
    cron_expression: str
    timezone: str
    schedule_type: str = Field(description="daily | weekly | monthly, or custom (cron only)")
    schedule_time: str | None
    day_of_week: int | None
    day_of_month: int | None
    backup_type: str
    retention_policy_id: int | None
    retention_days: int | None
    storage_ids: list[int]
    parallel_streams: int = Field(description=PARALLEL_STREAMS_DOC)
    priority: int
    enabled: bool
    is_active: bool
    notify_on_success: bool
    notify_on_failure: bool
    misfire_policy: str
    verify_after: str = Field(description=VERIFY_AFTER_DOC)
    restore_test_every_days: int | None = Field(description=RESTORE_TEST_DOC)
    restore_test_server_id: int | None = Field(description=SANDBOX_DOC)
    last_restore_test_at: UtcDatetime | None
    last_run: UtcDatetime | None
    next_run: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class RunRequest(InputModel):
    """Seed 000's manual trigger. Send an `Idempotency-Key` header to make retries safe:
    the same key within 24 hours returns the same run instead of starting another."""

    backup_type: str | None = Field(None, pattern="^full$")
    notify: bool | None = None


class ScheduleRunOut(OutputModel):
    id: int
    schedule_id: int
    scheduled_for: UtcDatetime | None
    trigger: str = Field(description="scheduled | catch_up | manual")
    status: str = Field(
        description="started (its backup runs), then its backup's end: completed | failed | "
        "cancelled | interrupted; or skipped | failed when no backup started"
    )
    reason: str | None
    missed: int = Field(description="Earlier slots coalesced into this catch-up run")
    backup_id: int | None
    job_id: int | None
    created_at: UtcDatetime


class CronPreviewRequest(InputModel):
    """A cron expression and timezone to explain before saving a schedule."""

    cron_expression: CronText
    timezone: TimezoneName = "UTC"
    count: int = Field(5, ge=1, le=50)

    @field_validator("cron_expression")
    @classmethod
    def _cron(cls, value: str) -> str:
        return cron.normalize(value)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        cron.zone(value)
        return value


class CronPreview(OutputModel):
    cron_expression: str
    timezone: str
    description: str = Field(description="The expression in English words")
    next_runs: list[UtcDatetime] = Field(description="The next runs, in UTC, DST rules applied")
