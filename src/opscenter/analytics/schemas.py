"""Analytics request and response models."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator, model_validator

from opscenter.core import cron
from opscenter.core.schemas import Id, InputModel, Name, NoControlChars, OutputModel, UtcDatetime

WindowText = Annotated[
    str,
    StringConstraints(pattern=r"^\d{1,3}d$"),
    Field(description="The last N days up to now: `7d`, `30d`, ... (1 to 366)"),
]


class TrendMetric(StrEnum):
    BACKUPS = "backups"
    BACKUP_FAILURES = "backup_failures"
    BACKUP_SUCCESS_RATE = "backup_success_rate"
    BACKUP_DURATION = "backup_duration"
    BACKUP_SIZE = "backup_size"
    VERIFICATION_COVERAGE = "verification_coverage"
    RESTORE_RTO = "restore_rto"
    INCIDENTS = "incidents"
    MTTA = "mtta"
    MTTR = "mttr"
    FINDINGS = "findings"


class ReportMetric(StrEnum):
    BACKUPS = "backups"
    COMPLETED = "completed"
    FAILED = "failed"
    SUCCESS_RATE = "success_rate"
    MEAN_DURATION_SECONDS = "mean_duration_seconds"
    MEAN_SIZE_BYTES = "mean_size_bytes"
    TOTAL_SIZE_BYTES = "total_size_bytes"
    VERIFICATION_COVERAGE = "verification_coverage"


class GroupBy(StrEnum):
    TARGET = "target"
    TEAM = "team"
    DAY = "day"
    WEEK = "week"
    NONE = "none"


class Window(OutputModel):
    start: UtcDatetime
    end: UtcDatetime
    days: int


# -- metrics --------------------------------------------------------------------------------
class BackupFigures(OutputModel):
    finished: int = Field(description="Completed, failed and interrupted (not cancelled)")
    completed: int
    failed: int = Field(description="Failed or interrupted")
    success_rate: float | None = Field(description="Percent of finished backups completed")
    mean_duration_seconds: float | None
    mean_size_bytes: float | None
    total_size_bytes: int


class TargetFigures(BackupFigures):
    server_id: int | None
    server_name: str | None
    database_name: str
    last_completed_at: UtcDatetime | None


class RpoFigures(OutputModel):
    scheduled_targets: int = Field(description="Targets of enabled schedules")
    compliant: int = Field(
        description="Whose last good backup is within 1.5 schedule intervals of the window end"
    )
    compliance_percent: float | None
    late: list[str] = Field(description="The late targets, `server_id/database` (at most 50)")


class VerificationFigures(OutputModel):
    completed_backups: int
    verified_backups: int = Field(description="Completed in the window and verified since")
    coverage_percent: float | None


class RestoreTestFigures(OutputModel):
    runs: int
    passed: int
    mean_rto_seconds: float | None
    max_rto_seconds: float | None


class IncidentFigures(OutputModel):
    opened: int
    acknowledged: int
    resolved: int
    mtta_seconds: float | None
    mttr_seconds: float | None


class SeverityCount(OutputModel):
    severity: str
    count: int


class SpendFigure(OutputModel):
    currency: str
    effective_cost: float = Field(description="Imported cost lines (FOCUS) in the window")


class MetricsOut(OutputModel):
    window: Window
    backups: BackupFigures
    targets: list[TargetFigures]
    rpo: RpoFigures
    verification: VerificationFigures
    restore_tests: RestoreTestFigures
    incidents: IncidentFigures
    open_findings: list[SeverityCount] = Field(description="Open now, by severity")
    spend: list[SpendFigure]


# -- trends and predictions -----------------------------------------------------------------
class TrendPoint(OutputModel):
    start: UtcDatetime
    end: UtcDatetime
    value: float | None = Field(description="None where the step has no data")
    samples: int


class TrendOut(OutputModel):
    metric: TrendMetric
    unit: str
    window: Window
    step_seconds: int
    slope_per_day: float | None = Field(description="Theil-Sen slope over the steps with data")
    points: list[TrendPoint]


class PredictionPoint(OutputModel):
    start: UtcDatetime
    value: float
    low: float
    high: float


class PredictionOut(OutputModel):
    metric: TrendMetric
    unit: str
    method: str
    interval: str
    history_weeks: int
    weeks_with_data: int
    slope_per_week: float | None
    reason: str | None = Field(description="Why there are no points, when there are none")
    points: list[PredictionPoint]


# -- insights -------------------------------------------------------------------------------
class InsightOut(OutputModel):
    fingerprint: str
    kind: str = Field(
        description="size_anomaly, duration_jump, failing_streak, verification_gap or "
        "rising_incidents"
    )
    severity: str
    title: str
    detail: str
    team_id: int
    server_id: int | None
    database_name: str | None
    at: UtcDatetime | None = Field(description="When the anomalous data point happened")
    value: float | None
    median: float | None
    mad: float | None
    score: float | None = Field(description="Robust z: (value - median) / (1.4826 MAD)")
    links: list[str] = Field(description="API paths of the data behind it")
    dismissed: bool
    dismissed_at: UtcDatetime | None = None


class DismissIn(InputModel):
    reason: Annotated[str, StringConstraints(max_length=2000), NoControlChars] = ""


# -- dashboard ------------------------------------------------------------------------------
class DayCount(OutputModel):
    day: str
    completed: int
    failed: int


class DashboardOut(OutputModel):
    generated_at: UtcDatetime
    window: Window
    backups: BackupFigures
    rpo: RpoFigures
    verification: VerificationFigures
    restore_tests: RestoreTestFigures
    incidents: IncidentFigures
    open_findings: list[SeverityCount]
    spend: list[SpendFigure]
    daily: list[DayCount]
    insights_total: int = Field(description="Insights not dismissed")
    insights_by_kind: dict[str, int]
    insights: list[InsightOut] = Field(description="The first few, most severe first")


# -- custom reports -------------------------------------------------------------------------
class ReportFilters(InputModel):
    server_id: Id | None = None
    database_name: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    db_type: Annotated[str, StringConstraints(min_length=1, max_length=20)] | None = None


class ReportIn(InputModel):
    name: Name
    description: Annotated[str, StringConstraints(max_length=2000), NoControlChars] = ""
    metrics: list[ReportMetric] = Field(min_length=1, max_length=len(ReportMetric))
    filters: ReportFilters = Field(default_factory=ReportFilters)
    group_by: GroupBy = GroupBy.TARGET
    window: WindowText = "30d"
    schedule: str | None = Field(
        None, description="A five-field cron expression: generate on this schedule too"
    )
    timezone: str = "UTC"
    team_id: Id | None = None

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[ReportMetric]) -> list[ReportMetric]:
        if len(set(value)) != len(value):
            raise ValueError("each metric once")
        return value

    @model_validator(mode="after")
    def _schedule(self) -> ReportIn:
        self.timezone = cron.zone(self.timezone).key
        if self.schedule is not None:
            self.schedule = cron.normalize(self.schedule)
        days = int(self.window[:-1])
        if not 1 <= days <= 366:
            raise ValueError("window: between 1d and 366d")
        return self


class ReportOut(OutputModel):
    id: int
    team_id: int
    name: str
    description: str
    metrics: list[str]
    filters: dict[str, Any]
    group_by: str
    window: str
    schedule: str | None
    timezone: str
    next_run_at: UtcDatetime | None
    last_version: int
    created_at: UtcDatetime


class ResultSummary(OutputModel):
    report_id: int
    version: int
    trigger: str
    window_start: UtcDatetime
    window_end: UtcDatetime
    row_count: int
    generated_at: UtcDatetime


class ResultOut(ResultSummary):
    columns: list[str]
    rows: list[dict[str, Any]]
