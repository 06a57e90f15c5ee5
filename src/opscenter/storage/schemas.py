from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from opscenter.core.schemas import Id, InputModel, Name, OutputModel, UtcDatetime

AbsPath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Prefix = Annotated[str, StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9._/-]*$")]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class StorageType(StrEnum):
    LOCAL = "local"
    NETWORK = "network"
    S3 = "s3"
    SFTP = "sftp"


class PathConfig(InputModel):
    """`local`: a directory; `network`: the mount point of a network share."""

    path: AbsPath
    prefix: Prefix = ""


class S3Config(InputModel):
    bucket: Annotated[
        str,
        StringConstraints(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$"),
    ]
    endpoint_url: Annotated[str, StringConstraints(max_length=2000)] | None = Field(
        None, description="Any S3-compatible endpoint; empty for AWS"
    )
    region: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "us-east-1"
    prefix: Prefix = ""
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    verify_tls: bool = True


class S3Credentials(InputModel):
    access_key_id: Secret
    secret_access_key: Secret


class SftpConfig(InputModel):
    host: Annotated[
        str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:-]+$")
    ]
    port: int = Field(22, ge=1, le=65535)
    username: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    path: AbsPath = Field(description="Directory on the server that holds the artifacts")
    host_key: Annotated[str, StringConstraints(max_length=2000)] | None = Field(
        None, description="Expected host key; empty = pinned on first connection"
    )


class SftpCredentials(InputModel):
    password: Secret | None = None
    private_key: Secret | None = None
    passphrase: Secret | None = None


class PathStorageCreate(InputModel):
    name: Name
    type: Literal[StorageType.LOCAL, StorageType.NETWORK]
    config: PathConfig
    is_default: bool = False
    team_id: Id | None = None


class S3StorageCreate(InputModel):
    name: Name
    type: Literal[StorageType.S3]
    config: S3Config
    credentials: S3Credentials | None = None
    is_default: bool = False
    team_id: Id | None = None


class SftpStorageCreate(InputModel):
    name: Name
    type: Literal[StorageType.SFTP]
    config: SftpConfig
    credentials: SftpCredentials
    is_default: bool = False
    team_id: Id | None = None


StorageCreate = Annotated[
    PathStorageCreate | S3StorageCreate | SftpStorageCreate, Field(discriminator="type")
]


class StorageUpdate(InputModel):
    name: Name | None = None
    config: dict[str, Any] | None = Field(None, description="The type's whole config")
    credentials: dict[str, Secret] | None = Field(None, description="Replaces stored ones")
    is_default: bool | None = None
    is_active: bool | None = None


class StorageTest(InputModel):
    """Test a saved provider (`provider_id`) or a configuration before saving it."""

    provider_id: Id | None = None
    provider: StorageCreate | None = None


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
