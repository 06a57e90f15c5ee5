from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints, model_validator

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
    """Test a saved provider (`provider_id`), a configuration before saving it
    (`provider`), or seed 000's `provider_type` + `connection_string` as a user types it:
    a path for `local` and `network` (a share name such as `\\\\server\\backup` is
    answered with how to mount it), `s3://bucket/prefix` (with `endpoint_url`, `region`,
    `access_key_id`, `secret_access_key`), `sftp://user@host:port/path` (with `password`
    or `private_key`)."""

    provider_id: Id | None = None
    provider: StorageCreate | None = None
    provider_type: StorageType | None = None
    connection_string: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = (
        None
    )
    endpoint_url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    region: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    password: Secret | None = None
    private_key: Secret | None = None

    @model_validator(mode="after")
    def _from_connection_string(self) -> StorageTest:
        if (self.provider_type is None) != (self.connection_string is None):
            raise ValueError("give provider_type and connection_string together")
        if self.provider_type is not None and self.connection_string is not None:
            if self.provider is not None or self.provider_id is not None:
                raise ValueError("give provider_id, provider or a connection_string, not several")
            self.provider = _provider_of(self.provider_type, self.connection_string, self)
        return self


def _provider_of(
    kind: StorageType, text: str, test: StorageTest
) -> PathStorageCreate | S3StorageCreate | SftpStorageCreate:
    name = "connection-test"
    if kind in (StorageType.LOCAL, StorageType.NETWORK):
        return PathStorageCreate(name=name, type=kind, config=PathConfig(path=text))
    url = urlsplit(text)
    if url.scheme != kind.value or not url.hostname:
        raise ValueError(f"a {kind.value} connection_string looks like {_FORMS[kind]}")
    if kind == StorageType.S3:
        keys = (test.access_key_id, test.secret_access_key)
        return S3StorageCreate(
            name=name,
            type=kind,
            config=S3Config(
                bucket=url.hostname,
                prefix=url.path.strip("/"),
                endpoint_url=test.endpoint_url,
                region=test.region or "us-east-1",
                addressing_style="path" if test.endpoint_url else "auto",
            ),
            credentials=S3Credentials(access_key_id=keys[0], secret_access_key=keys[1])
            if all(keys)
            else None,
        )
    if not url.username or not url.path.startswith("/"):
        raise ValueError(f"an sftp connection_string looks like {_FORMS[kind]}")
    return SftpStorageCreate(
        name=name,
        type=kind,
        config=SftpConfig(
            host=url.hostname, port=url.port or 22, username=url.username, path=url.path
        ),
        credentials=SftpCredentials(password=test.password, private_key=test.private_key),
    )


_FORMS = {StorageType.S3: "s3://bucket/prefix", StorageType.SFTP: "sftp://user@host:22/path"}


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
