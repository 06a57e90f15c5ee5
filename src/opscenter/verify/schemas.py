from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from opscenter.core.schemas import Id, InputModel, OutputModel, UtcDatetime

TestType = Literal["checksum", "deep", "restore"]
Scope = Literal["full", "sample"]
RunStatus = Literal["queued", "running", "passed", "corrupt", "failed", "cancelled", "interrupted"]

LEVELS = (
    "checksum: re-read the stored object, its size and sha256 must be the recorded ones. "
    "deep: also decrypt, decompress and parse the whole dump (pg_restore -f /dev/null, or "
    "the dump's completion trailer). restore: restore into a scratch database (on the "
    "backup's server, or on target_server_id), compare the per-table row counts taken at "
    "dump time, record the restore time (RTO), then drop the scratch database, also on "
    "failure. scope 'sample' compares the row counts of at most "
    "10 tables; checksum and deep always read the whole artifact (a hash or an "
    "authenticated stream cannot be checked in part)."
)


class VerifyRequest(InputModel):
    __doc__ = LEVELS

    test_type: TestType = "checksum"
    scope: Scope = "full"
    target_server_id: Id | None = Field(
        None, description="restore tests: a sandbox server for the scratch database"
    )


class RecoveryTestCreate(InputModel):
    """Seed 002's recovery test: a restore test of one backup."""

    backup_id: Id
    scope: Scope = "full"
    target_server_id: Id | None = Field(
        None, description="A sandbox server for the scratch database (default: the source)"
    )


class TableCheck(OutputModel):
    table: str
    expected: int | None = Field(description="Rows counted at dump time")
    actual: int | None = Field(description="Rows in the restored scratch database")
    status: str = Field(description="ok | missing | differs | extra | estimated")


class VerificationOut(OutputModel):
    __doc__ = LEVELS

    id: int
    backup_id: int
    team_id: int
    job_id: int | None
    test_type: str
    scope: str
    trigger: str = Field(description="manual | after_backup | scheduled")
    status: RunStatus
    backup_verification_status: str = Field(
        description="unverified | checksum_ok | deep_ok | restore_verified | corrupt | missing "
        "(its artifact is gone)"
    )
    target_server_id: int | None
    scratch_database: str | None
    detail: str
    error_code: str | None
    error_message: str | None
    duration_seconds: float | None
    rto_seconds: float | None
    table_comparison: list[TableCheck]
    requested_by: int | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    created_at: UtcDatetime


class VerificationStatusOut(OutputModel):
    """The run's state and, while it runs, its job's progress."""

    id: int
    backup_id: int
    test_type: str
    status: RunStatus
    phase: str | None
    progress: float | None
    bytes_done: int
    backup_verification_status: str
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


def comparison(rows: list[dict[str, Any]]) -> list[TableCheck]:
    return [TableCheck.model_validate(r) for r in rows]
