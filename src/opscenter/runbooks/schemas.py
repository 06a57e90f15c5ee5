from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from opscenter.commands.schemas import VarName
from opscenter.core.schemas import Id, InputModel, Name, OutputModel, Text, UtcDatetime

StepType = Literal["manual", "command", "approval", "wait", "verify", "restore", "rotate_password"]
Condition = Literal["backup_completed_within", "backup_verified_within"]
RoleName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")]
Category = Annotated[str, StringConstraints(max_length=100)]


class StepIn(InputModel):
    name: Name
    type: StepType
    description: Text = ""
    #: command: which command, its variables, and targets instead of the runbook's.
    command_id: Id | None = None
    variables: dict[VarName, str | int] = Field(default_factory=dict, max_length=50)
    server_ids: list[Id] | None = Field(None, max_length=500)
    #: A failed step stops the run unless this is set.
    continue_on_failure: bool = False
    #: approval: who may approve (their role); never the person who started the run.
    approver_role: RoleName = "admin"
    #: wait: what must become true, and for how long to wait for it.
    condition: Condition | None = None
    within_minutes: int = Field(60, ge=1, le=60 * 24 * 31)
    wait_timeout_seconds: int = Field(3600, ge=1, le=86_400)
    #: verify: how deep to check the newest completed backup of each database of the targets.
    test_type: Literal["checksum", "deep", "restore"] = "deep"
    #: restore: the newest completed backup of `database_name` on the run's (first) target,
    #: into `target_database` on `target_server_id`, masked by `masking_rules`.
    database_name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    target_server_id: Id | None = None
    target_database: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    masking_rules: dict[str, str] = Field(default_factory=dict, max_length=200)
    drop_existing: bool = False

    @model_validator(mode="after")
    def _fits_type(self) -> StepIn:
        if self.type == "command" and self.command_id is None:
            raise ValueError(f"step {self.name!r}: a command step needs command_id")
        if self.type != "command" and (self.command_id is not None or self.variables):
            raise ValueError(f"step {self.name!r}: only command steps take a command")
        if self.type == "wait" and self.condition is None:
            raise ValueError(f"step {self.name!r}: a wait step needs a condition")
        if self.type == "restore" and not (
            self.database_name and self.target_server_id and self.target_database
        ):
            raise ValueError(
                f"step {self.name!r}: a restore step needs database_name, target_server_id "
                "and target_database"
            )
        return self


class SopCreate(InputModel):
    name: Name
    description: Text = ""
    category: Category = ""
    steps: list[StepIn] = Field(min_length=1, max_length=100)
    server_ids: list[Id] = Field(default_factory=list, max_length=500)
    team_id: Id | None = None


class BuiltinOut(OutputModel):
    key: str
    name: str
    description: str
    steps: list[dict[str, Any]]


class BuiltinCreate(InputModel):
    server_ids: list[Id] = Field(default_factory=list, max_length=500)
    name: Name | None = None
    team_id: Id | None = None
    #: Filled into the built-in's restore step (the staging restore).
    database_name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    target_server_id: Id | None = None
    target_database: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    masking_rules: dict[str, str] = Field(default_factory=dict, max_length=200)


class SopUpdate(InputModel):
    name: Name | None = None
    description: Text | None = None
    category: Category | None = None
    steps: list[StepIn] | None = Field(None, min_length=1, max_length=100)
    server_ids: list[Id] | None = Field(None, max_length=500)


class SopOut(OutputModel):
    id: int
    team_id: int
    name: str
    description: str
    category: str
    version: int
    steps: list[dict[str, Any]]
    server_ids: list[int]
    builtin: str | None
    created_by: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


class SopVersionOut(OutputModel):
    version: int
    name: str
    description: str
    steps: list[dict[str, Any]]
    server_ids: list[int]
    created_by: str
    created_at: UtcDatetime


class SopExecute(InputModel):
    server_ids: list[Id] | None = Field(None, max_length=500)
    confirm: Annotated[str, StringConstraints(max_length=500)] | None = Field(
        None, description="Type the runbook's name to run it on a production server"
    )


class StepAction(InputModel):
    note: Text | None = None


class StepRunOut(OutputModel):
    position: int
    name: str
    type: str
    status: str
    actor: str | None
    note: str | None
    outputs: dict[str, Any]
    command_execution_id: int | None
    started_at: UtcDatetime | None
    completed_at: UtcDatetime | None


class SopRunOut(OutputModel):
    id: int
    team_id: int
    sop_id: int | None
    sop_name: str
    version: int
    status: str
    current_step: int
    server_ids: list[int]
    paused: bool
    error: str | None
    requested_by: str
    job_id: int | None
    started_at: UtcDatetime | None
    completed_at: UtcDatetime | None
    created_at: UtcDatetime
    steps: list[StepRunOut] = Field(default_factory=list)
