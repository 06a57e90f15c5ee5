from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from opscenter.core.schemas import Id, InputModel, Name, NoControlChars, OutputModel, UtcDatetime

Count = Annotated[int, Field(ge=1, le=100_000)]
Description = Annotated[str, StringConstraints(max_length=2000), NoControlChars]
RULES = ("keep_last_n", "keep_days", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")

POLICY_DOC = (
    "The rules are a union, like restic's `forget`: a backup kept by any rule is kept. "
    "keep_last_n keeps the N newest completed backups; keep_days those of the last N days; "
    "keep_daily/weekly/monthly/yearly the newest backup of each of the last N days, ISO "
    "weeks, months or years that have backups (in the schedule's timezone, else UTC); "
    "min_keep at least that many of the newest. Whatever the rules say, the newest "
    "completed backup of a target is never deleted, nor the newest verified one (deep_ok or "
    "restore_verified), nor, when the newest is corrupt, the newest one not found corrupt; "
    "pending and running backups are never touched, and only completed backups are deleted."
)


class RetentionPolicyCreate(InputModel):
    __doc__ = POLICY_DOC

    name: Name
    description: Description = ""
    team_id: Id | None = Field(None, description="Defaults to the caller's first team")
    keep_last_n: Count | None = None
    keep_days: Annotated[int, Field(ge=1, le=36_500)] | None = None
    keep_daily: Count | None = None
    keep_weekly: Count | None = None
    keep_monthly: Count | None = None
    keep_yearly: Count | None = None
    min_keep: Annotated[int, Field(ge=1, le=100_000)] = Field(
        1, description="Keep at least this many of the newest completed backups"
    )

    @model_validator(mode="after")
    def _some_rule(self) -> RetentionPolicyCreate:
        if not any(getattr(self, rule) for rule in RULES):
            raise ValueError(f"give at least one rule: {', '.join(RULES)}")
        return self


class RetentionPolicyUpdate(InputModel):
    """Only the fields given change; `null` turns a rule off (one rule must remain)."""

    name: Name | None = None
    description: Description | None = None
    keep_last_n: Count | None = None
    keep_days: Annotated[int, Field(ge=1, le=36_500)] | None = None
    keep_daily: Count | None = None
    keep_weekly: Count | None = None
    keep_monthly: Count | None = None
    keep_yearly: Count | None = None
    min_keep: Annotated[int, Field(ge=1, le=100_000)] | None = None


class RetentionPolicyOut(OutputModel):
    __doc__ = POLICY_DOC

    id: int
    team_id: int
    name: str
    description: str
    keep_last_n: int | None
    keep_days: int | None
    keep_daily: int | None
    keep_weekly: int | None
    keep_monthly: int | None
    keep_yearly: int | None
    min_keep: int
    schedule_ids: list[int] = Field(description="Schedules that use this policy")
    created_at: UtcDatetime
    updated_at: UtcDatetime


class RetentionScope(InputModel):
    """Which backups: those of a schedule, or all of a target (server + database)."""

    schedule_id: Id | None = None
    server_id: Id | None = None
    database_name: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None,
        description="For the daily/weekly/monthly/yearly periods; default: the schedule's, "
        "else UTC",
    )

    @model_validator(mode="after")
    def _one_scope(self) -> RetentionScope:
        by_target = self.server_id is not None or self.database_name is not None
        if (self.schedule_id is None) == (not by_target):
            raise ValueError("give schedule_id, or server_id and database_name")
        if by_target and (self.server_id is None or self.database_name is None):
            raise ValueError("give both server_id and database_name")
        return self


class RetainedBackup(OutputModel):
    backup_id: int
    created_at: UtcDatetime
    status: str
    reasons: list[str] = Field(description="Every rule that keeps it, or why it goes")


class RetentionPreview(OutputModel):
    policy_id: int
    schedule_id: int | None
    server_id: int | None
    database_name: str | None
    timezone: str
    evaluated_at: UtcDatetime
    keep: list[RetainedBackup]
    delete: list[RetainedBackup]


class RetentionApplied(RetentionPreview):
    deleted: list[int] = Field(description="Backups removed from storage and the catalog")
    failed: dict[int, str] = Field(
        default_factory=dict, description="Backups not deleted this time, and why"
    )
