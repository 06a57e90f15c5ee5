from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StringConstraints, model_validator

from opscenter.core.clock import as_utc
from opscenter.core.schemas import Id, InputModel, Name, NoControlChars, OutputModel, UtcDatetime

ReportStatus = Literal["success", "warning", "failed", "running"]
# What scripts in the wild send, mapped onto the four statuses above.
STATUS_ALIASES = {
    "succeeded": "success",
    "successful": "success",
    "completed": "success",
    "ok": "success",
    "failure": "failed",
    "error": "failed",
    "warn": "warning",
    "started": "running",
    "in_progress": "running",
}
# A job created by its first report expects one report a day (nightly scripts are the
# common case) and tolerates an hour of lateness; change both with PUT /external-jobs/{id}.
DEFAULT_INTERVAL_MINUTES = 24 * 60
DEFAULT_GRACE_MINUTES = 60
MAX_INTERVAL_MINUTES = 366 * 24 * 60
MAX_SIZE_BYTES = 2**63 - 1
MAX_DURATION_SECONDS = 366 * 24 * 3600


def _status(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        return STATUS_ALIASES.get(lowered, lowered)
    return value


Host = Annotated[str, StringConstraints(max_length=255, strip_whitespace=True), NoControlChars]
Message = Annotated[str, StringConstraints(max_length=4000), NoControlChars]
IntervalMinutes = Annotated[int, Field(ge=1, le=MAX_INTERVAL_MINUTES)]
GraceMinutes = Annotated[int, Field(ge=0, le=MAX_INTERVAL_MINUTES)]


class ReportIn(InputModel):
    """A report from a script (seed 000's PowerShell integration)."""

    job_name: Name
    status: Annotated[
        ReportStatus,
        BeforeValidator(_status),
        Field(
            description="success, warning, failed or running (case-insensitive; "
            "completed/succeeded/ok and error/failure are accepted too)"
        ),
    ]
    started_at: UtcDatetime | None = Field(None, description="Offset-less times are UTC")
    completed_at: UtcDatetime | None = None
    size_bytes: int | None = Field(None, ge=0, le=MAX_SIZE_BYTES)
    duration_seconds: float | None = Field(None, ge=0, le=MAX_DURATION_SECONDS)
    message: Message | None = None
    host: Host = ""

    @model_validator(mode="after")
    def _ordered(self) -> ReportIn:
        if (
            self.started_at is not None
            and self.completed_at is not None
            and as_utc(self.completed_at) < as_utc(self.started_at)
        ):
            raise ValueError("completed_at is before started_at")
        return self


class ExternalJobCreate(InputModel):
    name: Name
    host: Host = ""
    expected_interval_minutes: IntervalMinutes = DEFAULT_INTERVAL_MINUTES
    grace_minutes: GraceMinutes = DEFAULT_GRACE_MINUTES
    enabled: bool = True
    team_id: Id | None = Field(None, description="Defaults to your first team")


class ExternalJobUpdate(InputModel):
    expected_interval_minutes: IntervalMinutes | None = None
    grace_minutes: GraceMinutes | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> ExternalJobUpdate:
        if not self.model_fields_set:
            raise ValueError("give expected_interval_minutes, grace_minutes or enabled")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class ReportOut(OutputModel):
    id: int
    external_job_id: int
    status: str
    started_at: UtcDatetime | None
    completed_at: UtcDatetime | None
    size_bytes: int | None
    duration_seconds: float | None
    message: str | None
    received_at: UtcDatetime


class ExternalJobOut(OutputModel):
    id: int
    team_id: int
    name: str
    host: str
    expected_interval_minutes: int
    grace_minutes: int
    enabled: bool
    last_report_at: UtcDatetime | None
    last_status: str | None
    last_success_at: UtcDatetime | None
    last_size_bytes: int | None
    next_report_due_at: UtcDatetime = Field(
        description="Last report (or creation) + expected interval + grace"
    )
    overdue: bool = Field(description="Enabled and past next_report_due_at now")
    overdue_since: UtcDatetime | None = Field(
        description="When the overdue alert was raised; cleared by the next report"
    )
    created_at: UtcDatetime
    updated_at: UtcDatetime


class ExternalJobDetail(ExternalJobOut):
    recent_reports: list[ReportOut] = Field(description="The newest reports, newest first")


class ReportAccepted(OutputModel):
    report: ReportOut
    job: ExternalJobOut
    created_job: bool = Field(description="True when this report created the job")
    recovered: bool = Field(description="True when this report ended an overdue period")
