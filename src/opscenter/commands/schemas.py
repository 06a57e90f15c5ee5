from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from opscenter.core.schemas import Id, InputModel, Name, OutputModel, Text, UtcDatetime
from opscenter.jobs.schemas import Accepted
from opscenter.servers.schemas import Environment

CommandType = Literal["shell", "docker", "sql"]
VariableType = Literal["string", "int", "enum", "path"]
VarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\s,]+$")]
Template = Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
Short = Annotated[str, StringConstraints(max_length=500)]
DbName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\s\x00]+$")]


class VariableDef(InputModel):
    name: VarName
    type: VariableType = "string"
    pattern: Short | None = Field(None, description="A regex the whole value must match")
    allowed_values: list[Short] | None = Field(None, max_length=200)
    default: str | int | None = None
    secret: bool = False
    description: Short = ""
    minimum: int | None = None
    maximum: int | None = None


class VariableOut(OutputModel):
    name: str
    type: str
    pattern: str | None
    allowed_values: list[str]
    default: str | None
    secret: bool
    description: str
    minimum: int | None
    maximum: int | None


def _tags(value: Any) -> Any:
    """Seed 001 sends "docker,restart"; a list is taken too."""
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


class CommandCreate(InputModel):
    name: Name
    description: Text = ""
    command_template: Template
    type: CommandType = "shell"
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    variables: list[VariableDef] = Field(default_factory=list, max_length=50)
    timeout_seconds: int = Field(300, ge=1, le=86_400)
    database: DbName | None = Field(None, description="sql: the database it runs in")
    writes: bool = Field(False, description="sql: may change data (otherwise read-only)")
    team_id: Id | None = None

    _split_tags = field_validator("tags", mode="before")(_tags)


class CommandUpdate(InputModel):
    name: Name | None = None
    description: Text | None = None
    command_template: Template | None = None
    type: CommandType | None = None
    tags: list[Tag] | None = Field(None, max_length=50)
    variables: list[VariableDef] | None = Field(None, max_length=50)
    timeout_seconds: int | None = Field(None, ge=1, le=86_400)
    database: DbName | None = None
    writes: bool | None = None

    _split_tags = field_validator("tags", mode="before")(_tags)


class CommandOut(OutputModel):
    id: int
    team_id: int
    name: str
    description: str
    command_template: str
    type: str
    tags: list[str]
    variables: list[VariableOut]
    timeout_seconds: int
    database: str | None
    writes: bool
    created_by: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


TagSelector = dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], Short]


class TargetSelection(InputModel):
    """Where to run: one server, a list, or every server matching tags and environment."""

    server_id: Id | None = None
    server_ids: list[Id] | None = Field(None, max_length=500)
    tags: TagSelector | None = Field(None, description="Server tags that must all match")
    environment: Environment | None = None

    @model_validator(mode="after")
    def _one_way(self) -> TargetSelection:
        ways = sum(
            x is not None
            for x in (self.server_id, self.server_ids, self.tags or self.environment or None)
        )
        if ways != 1:
            raise ValueError(
                "choose the targets one way: server_id, server_ids, or tags/environment"
            )
        return self


class ExecuteRequest(TargetSelection):
    variables: dict[VarName, str | int] = Field(default_factory=dict, max_length=50)
    confirm: Short | None = Field(
        None, description="Type the command's name to run it on a production server"
    )


class TargetOut(OutputModel):
    id: int
    name: str
    type: str
    environment: str
    host: str
    health_status: str


class TargetPreview(OutputModel):
    items: list[TargetOut]
    total: int
    production: bool
    confirmation_required: bool
    confirm_text: str | None = None


class ExecutionAccepted(Accepted):
    execution_id: int


class ResultOut(OutputModel):
    id: int
    server_id: int | None
    server_name: str
    environment: str
    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_bytes: int
    stderr_bytes: int
    truncated: bool
    error: str | None
    started_at: UtcDatetime | None
    completed_at: UtcDatetime | None
    duration_seconds: float | None


class ExecutionOut(OutputModel):
    id: int
    team_id: int
    command_id: int | None
    command_name: str
    type: str
    server_id: int | None
    job_id: int | None
    command_text: str
    variables: dict[str, Any]
    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    timeout_seconds: int
    started_at: UtcDatetime | None
    completed_at: UtcDatetime | None
    duration_seconds: float | None
    executed_by: str
    sop_run_id: int | None
    created_at: UtcDatetime
    results: list[ResultOut] = Field(default_factory=list)
