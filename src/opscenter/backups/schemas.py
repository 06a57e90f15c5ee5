from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from opscenter.core.schemas import Id, InputModel, OutputModel, SingleLine, UtcDatetime

DatabaseName = Annotated[str, StringConstraints(min_length=1, max_length=4096), SingleLine]
ColumnRef = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$",
    ),
]


#: Destinations of one backup (the primary and its copies).
MAX_DESTINATIONS = 5
PARALLEL_STREAMS_DOC = (
    "PostgreSQL, MySQL/MariaDB (InnoDB tables): dump the table data in this many concurrent "
    "streams, one snapshot shared (1: one stream). Each stream is its own stored part, all "
    "listed by the one manifest"
)
ParallelStreams = Annotated[int, Field(ge=1, le=16)]


class CompressionType(StrEnum):
    ZSTD = "zstd"
    GZIP = "gzip"
    NONE = "none"


class BackupCreate(InputModel):
    server_id: Id
    database_name: DatabaseName | None = Field(
        None, description="Database to dump; for `sqlite` a file and for `local` a path"
    )
    source_path: DatabaseName | None = Field(
        None, description="Seed 000's name for a file or directory to back up"
    )
    db_type: str | None = Field(
        None, max_length=20, description="Checked against the server's type"
    )
    backup_type: str = Field("full", pattern="^full$")
    compress: bool = True
    compression_type: CompressionType = CompressionType.ZSTD
    encrypt: bool = True
    parallel_streams: ParallelStreams = Field(1, description=PARALLEL_STREAMS_DOC)
    storage_id: Id | None = Field(None, description="Default: the team's default storage")
    storage_ids: list[Id] | None = Field(
        None,
        min_length=1,
        max_length=MAX_DESTINATIONS,
        description="Several destinations (instead of storage_id): one dump, written to "
        "each; the first is the primary backup, every other one a copy (its own backup, "
        "with copy_of_id) that fails on its own without failing the primary",
    )

    @model_validator(mode="after")
    def _target(self) -> BackupCreate:
        if (self.database_name is None) == (self.source_path is None):
            raise ValueError("give database_name, or source_path for files and directories")
        if self.storage_id is not None and self.storage_ids is not None:
            raise ValueError("give storage_id or storage_ids, not both")
        if self.storage_ids is not None and len(set(self.storage_ids)) != len(self.storage_ids):
            raise ValueError("storage_ids lists a storage provider twice")
        return self

    @property
    def target(self) -> str:
        return self.database_name or self.source_path or ""

    @property
    def compression(self) -> CompressionType:
        return self.compression_type if self.compress else CompressionType.NONE


class BackupOut(OutputModel):
    id: int
    team_id: int
    server_id: int | None
    storage_id: int
    schedule_id: int | None
    job_id: int | None
    copy_of_id: int | None = Field(
        description="A copy of that backup: the same dump, written to another storage"
    )
    imported: bool = Field(
        description="Taken in from outside (an upload or a storage's contents), not made "
        "here: only an admin restores it"
    )
    database_name: str
    db_type: str
    backup_type: str
    status: str
    size_bytes: int | None
    original_size_bytes: int | None
    storage_path: str | None
    is_encrypted: bool
    is_compressed: bool
    compression_type: str
    parallel_streams: int = Field(description=PARALLEL_STREAMS_DOC)
    checksum: str | None
    encryption_key_ids: list[str]
    row_counts: dict[str, int]
    server_version: str | None
    verification_status: str = Field(
        description="unverified | checksum_ok | deep_ok | restore_verified | corrupt | missing"
        " (corrupt or missing: an integrity check found it damaged or gone; no recovery point)"
    )
    error_code: str | None
    error_message: str | None
    started_at: UtcDatetime | None
    completed_at: UtcDatetime | None
    duration_seconds: float | None
    created_at: UtcDatetime


class MaskingRule(StrEnum):
    HASH = "hash"
    RANDOMIZE = "randomize"
    NULL = "null"


class RestoreRequest(InputModel):
    target_server_id: Id | None = Field(None, description="Default: the backup's own server")
    target_database: DatabaseName
    drop_existing: bool = Field(False, description="Restore over a non-empty database")
    confirm: str | None = Field(
        None, max_length=4096, description="The database name, for production targets"
    )
    mask_sensitive_data: bool = False
    masking_rules: dict[
        ColumnRef, Annotated[str, StringConstraints(min_length=1, max_length=200)]
    ] = Field(
        default_factory=dict,
        max_length=200,
        description="column or table.column -> hash | randomize | null | fixed:<value>",
    )
    force: bool = Field(False, description="Restore a backup whose verification found it corrupt")
    parallel_jobs: int = Field(
        1,
        ge=1,
        le=16,
        description="PostgreSQL: pg_restore --jobs. Above 1 the verified dump is staged in a "
        "temp file first (its size on disk; on this server, or in /tmp of the SSH host or "
        "container that runs the tools) and the restore is no longer one transaction; into "
        "a new database a failure still drops it",
    )

    @model_validator(mode="after")
    def _rules(self) -> RestoreRequest:
        for column, rule in self.masking_rules.items():
            if rule not in {r.value for r in MaskingRule} and not rule.startswith("fixed:"):
                raise ValueError(
                    f"masking rule for {column} must be hash, randomize, null or fixed:<value>"
                )
        if self.masking_rules and not self.mask_sensitive_data:
            raise ValueError("masking_rules given but mask_sensitive_data is false")
        return self


class DownloadLink(OutputModel):
    download_url: str
    expires_at: UtcDatetime


class ImportResult(OutputModel):
    imported: int
    backup_ids: list[int]
    invalid: list[dict[str, str]] = Field(default_factory=list)
