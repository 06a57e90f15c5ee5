from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from opscenter.core.schemas import Id, InputModel, Name, OutputModel, UtcDatetime

AbsPath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class StorageType(StrEnum):
    LOCAL = "local"
    NETWORK = "network"


class StorageConfig(InputModel):
    """Where the artifacts go. `local`: a directory; `network`: a mounted share's path."""

    path: AbsPath
    prefix: Annotated[str, StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9._/-]*$")] = ""


class StorageCreate(InputModel):
    name: Name
    type: StorageType
    config: StorageConfig
    is_default: bool = False
    team_id: Id | None = None


class StorageUpdate(InputModel):
    name: Name | None = None
    config: StorageConfig | None = None
    is_default: bool | None = None
    is_active: bool | None = None


class StorageTest(InputModel):
    """Test a saved provider (`provider_id`) or a configuration before saving it."""

    provider_id: Id | None = None
    type: StorageType | None = None
    config: StorageConfig | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StorageTest:
        if (self.provider_id is None) == (self.type is None or self.config is None):
            raise ValueError("give provider_id, or type and config")
        return self


class StorageOut(OutputModel):
    id: int
    team_id: int
    name: str
    type: str
    config: dict[str, Any]
    has_credentials: bool
    is_default: bool
    is_active: bool
    created_at: UtcDatetime
    updated_at: UtcDatetime


class StorageTestResult(OutputModel):
    success: bool
    message: str
    latency_ms: int
    code: str | None = None


class SpaceOut(OutputModel):
    provider_id: int
    total_bytes: int | None
    used_bytes: int | None
    free_bytes: int | None
    used_by_backups_bytes: int
    object_count: int


class StoredArtifact(OutputModel):
    key: str
    engine: str
    database: str
    size_bytes: int
    sha256: str
    compression: str
    encrypted: bool
    created_at: str
    in_catalog: bool
    backup_id: int | None = None


class StoredArtifacts(OutputModel):
    items: list[StoredArtifact]
    total: int
    invalid: list[dict[str, str]] = Field(default_factory=list)
    orphans: list[str] = Field(default_factory=list)


class ImportResult(OutputModel):
    imported: int
    backup_ids: list[int]
    invalid: list[dict[str, str]] = Field(default_factory=list)
