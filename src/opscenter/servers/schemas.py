from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from opscenter.core.schemas import (
    Id,
    InputModel,
    Name,
    OutputModel,
    SingleLine,
    Text,
    UtcDatetime,
)

Secret = Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
Hostname = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:\[\]-]+$")
]
UserName = Annotated[str, StringConstraints(min_length=1, max_length=200), SingleLine]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
TagValue = Annotated[str, StringConstraints(max_length=256)]
FilePath = Annotated[
    str, StringConstraints(min_length=1, max_length=4096, pattern=r"^/"), SingleLine
]
ContainerName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]


class ServerType(StrEnum):
    POSTGRESQL = "postgresql"
    MYSQL = "mysql"
    SQLITE = "sqlite"
    LOCAL = "local"
    SSH = "ssh"
    DOCKER = "docker"


class Environment(StrEnum):
    PRODUCTION = "production"
    STAGING = "staging"
    DEVELOPMENT = "development"
    TEST = "test"


DEFAULT_PORTS = {ServerType.POSTGRESQL: 5432, ServerType.MYSQL: 3306}
NETWORKED = {ServerType.POSTGRESQL, ServerType.MYSQL, ServerType.SSH}
# Hosts run the dump tools themselves (for their `db_engine`, their files and SQLite files).
# A docker container is one (reached through this host, or through an SSH `host`).
HOSTS = {ServerType.LOCAL, ServerType.SSH, ServerType.DOCKER}
DbEngine = Literal["postgresql", "mysql"]


class Credentials(InputModel):
    username: UserName | None = None
    password: Secret | None = None
    ssh_key: Secret | None = None
    db_username: UserName | None = None
    db_password: Secret | None = None


class ServerCreate(InputModel):
    name: Name
    description: Text = ""
    type: ServerType
    environment: Environment = Environment.DEVELOPMENT
    host: Hostname | None = None
    port: int | None = Field(None, ge=1, le=65535)
    paths: list[FilePath] = Field(default_factory=list, max_length=100)
    credentials: Credentials | None = None
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=50)
    team_id: Id | None = Field(None, description="Defaults to the caller's first team")
    db_engine: DbEngine | None = Field(
        None, description="local/ssh hosts: the database engine running there"
    )
    db_port: int | None = Field(None, ge=1, le=65535, description="local/ssh: its port")
    ssh_host_key: Annotated[str, StringConstraints(max_length=2000)] | None = Field(
        None, description="ssh: the expected host key; empty = pinned on first connection"
    )
    container: ContainerName | None = Field(
        None,
        description="docker: the container's name or id. Without `host` it runs on this "
        "host; with `host` on that SSH host (`port`, `credentials.username/password/"
        "ssh_key` are the SSH login there)",
    )

    @model_validator(mode="after")
    def _shape(self) -> ServerCreate:
        if self.type in NETWORKED and not self.host:
            raise ValueError(f"a {self.type.value} server needs a host")
        if self.type == ServerType.SQLITE and not self.paths:
            raise ValueError("a sqlite server needs the database files in paths")
        if self.type not in HOSTS and (self.db_engine or self.db_port):
            raise ValueError("db_engine and db_port apply to local, ssh and docker hosts")
        if self.ssh_host_key and not over_ssh(self.type, self.host):
            raise ValueError("ssh_host_key applies to ssh servers and docker on an SSH host")
        if (self.type == ServerType.DOCKER) != bool(self.container):
            raise ValueError(
                "a docker server needs its container"
                if self.type == ServerType.DOCKER
                else "container applies to docker servers"
            )
        return self


def over_ssh(kind: ServerType, host: str | None) -> bool:
    """Whether the server is reached through SSH (an ssh host, or docker on an SSH host)."""
    return kind == ServerType.SSH or (kind == ServerType.DOCKER and bool(host))


class ServerUpdate(InputModel):
    name: Name | None = None
    description: Text | None = None
    environment: Environment | None = None
    host: Hostname | None = None
    port: int | None = Field(None, ge=1, le=65535)
    paths: list[FilePath] | None = Field(None, max_length=100)
    credentials: Credentials | None = Field(
        None, description="Replaces the stored credentials as a whole"
    )
    tags: dict[TagKey, TagValue] | None = Field(None, max_length=50)
    db_engine: DbEngine | None = None
    db_port: int | None = Field(None, ge=1, le=65535)
    reset_host_key: bool = Field(
        False, description="ssh: forget the pinned host key; the next connection pins anew"
    )
    container: ContainerName | None = None


class CredentialsOut(OutputModel):
    username: str | None
    has_password: bool
    has_ssh_key: bool
    has_db_password: bool


class ServerOut(OutputModel):
    id: int
    team_id: int
    name: str
    description: str
    type: str
    environment: str
    host: str
    port: int | None
    paths: list[str]
    tags: dict[str, str]
    credentials: CredentialsOut
    db_engine: str | None
    db_port: int | None
    ssh_host_key: str | None
    container: str | None
    health_status: str
    health_message: str | None
    last_heartbeat: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class ConnectionTest(OutputModel):
    success: bool
    message: str
    latency_ms: int
    code: str | None = None
    version: str | None = None
    host_key_fingerprint: str | None = None


class DatabaseInfo(OutputModel):
    name: str
    size_mb: float
    type: str


class DatabaseList(OutputModel):
    databases: list[DatabaseInfo]
