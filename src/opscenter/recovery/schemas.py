from __future__ import annotations

from typing import Literal

from pydantic import Field

from opscenter.backups.schemas import BackupOut
from opscenter.core.schemas import OutputModel, UtcDatetime

TargetKind = Literal["platform", "external"]
RpoStatus = Literal["ok", "breached", "awaiting_first", "unscheduled"]
Health = Literal["green", "amber", "red", "gray"]


class RecoveryPointOut(BackupOut):
    """A completed backup: a point the target can be restored to."""

    point_in_time: UtcDatetime = Field(description="When the backup began reading the data")


class TargetStatus(OutputModel):
    kind: TargetKind = Field(description="platform: backups made here; external: reports")
    name: str
    team_id: int
    server_id: int | None = None
    server_name: str | None = None
    database_name: str | None = Field(None, description="Database or path backed up")
    schedule_ids: list[int] = Field(default_factory=list)
    external_job_id: int | None = None
    host: str | None = None
    last_good_backup_id: int | None = None
    last_good_backup_at: UtcDatetime | None = Field(
        None, description="Point in time of the newest completed backup (or success report)"
    )
    age_seconds: int | None = None
    rpo_seconds: int | None = Field(
        None,
        description="The longest gap between two runs of the target's enabled schedules "
        "(an external job: its expected interval)",
    )
    allowed_age_seconds: int | None = Field(
        None,
        description="rpo_seconds plus the tolerance (10 %, at most 15 min; an external job: "
        "its grace) after which the target is breached",
    )
    rpo_status: RpoStatus
    health: Health = Field(
        description="red: breached; amber: within RPO but a failure in 24 h; green: within "
        "RPO; gray: nothing to measure (unscheduled, disabled, or first backup not due yet)"
    )
    failures_24h: int = Field(description="Failed or interrupted runs in the last 24 hours")
    storage_used_bytes: int = Field(
        description="Completed backups' stored size; an external job: its last reported size"
    )
    recovery_points: int = Field(description="Completed backups (external: success reports)")


class StatusSummary(OutputModel):
    generated_at: UtcDatetime
    targets: int
    green: int
    amber: int
    red: int
    gray: int
    failures_24h: int
    storage_used_bytes: int


class BackupStatus(OutputModel):
    summary: StatusSummary
    targets: list[TargetStatus] = Field(description="Red first, then amber, green, gray")
