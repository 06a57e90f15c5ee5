"""Seed 004's infra module: incidents, evidence, tasks and weekly SLA."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from opscenter.core.pagination import Page
from opscenter.core.schemas import Id, InputModel, NoControlChars, OutputModel, UtcDatetime
from opscenter.models import IncidentStatus, TaskStatus


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Environment(StrEnum):
    PRODUCTION = "production"
    STAGING = "staging"
    DEVELOPMENT = "development"


class SourceType(StrEnum):
    """What can raise an incident; `source_id` is its id."""

    BACKUP = "backup"
    VERIFICATION = "verification"
    EXTERNAL_JOB = "external_job"


class EvidenceType(StrEnum):
    LOG = "log"
    SCREENSHOT = "screenshot"
    DOCUMENT = "document"
    COMMAND = "command"
    NOTE = "note"
    OTHER = "other"


# A squad is also a WebSocket channel (`squad:<name>`), so it has the channel's alphabet.
Squad = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Title = Annotated[str, StringConstraints(min_length=3, max_length=200), NoControlChars]
Description = Annotated[str, StringConstraints(min_length=10, max_length=20_000)]
ServiceName = Annotated[str, StringConstraints(min_length=1, max_length=100), NoControlChars]
Hours = Annotated[float, Field(ge=0, le=10_000)]
TechniqueId = Annotated[str, StringConstraints(min_length=1, max_length=16), NoControlChars]


class IncidentCreate(InputModel):
    title: Title
    description: Description
    severity: Severity
    environment: Environment
    squad: Squad
    affected_services: list[ServiceName] | None = Field(None, max_length=50)
    commander_id: Id | None = None
    participant_ids: list[Id] = Field(default_factory=list, max_length=100)
    team_id: Id | None = Field(None, description="Defaults to the caller's first team")
    source_type: SourceType | None = Field(
        None, description="What raised it; a repeat of an open one adds to that incident"
    )
    source_id: Id | None = None
    attack_techniques: list[TechniqueId] | None = Field(
        None, max_length=50, description="ATT&CK technique ids (T1059, T1059.001) seen in it"
    )


class IncidentUpdate(InputModel):
    title: Title | None = None
    description: Description | None = None
    severity: Severity | None = None
    environment: Environment | None = None
    squad: Squad | None = None
    affected_services: list[ServiceName] | None = Field(None, max_length=50)
    status: IncidentStatus | None = None
    commander_id: Id | None = None
    participant_ids: list[Id] | None = Field(None, max_length=100)
    attack_techniques: list[TechniqueId] | None = Field(None, max_length=50)


class Person(OutputModel):
    id: int
    username: str


class IncidentOut(OutputModel):
    id: int
    jira_id: str
    title: str
    description: str
    severity: str
    status: str
    environment: str
    squad: str
    affected_services: list[str]
    attack_techniques: list[str]
    team_id: int
    commander: Person | None
    participants: list[Person]
    source_type: str | None
    source_id: int | None
    alert_count: int = Field(description="Times the same alert was raised while it was open")
    allowed_transitions: list[str]
    acknowledged_at: UtcDatetime | None
    mitigated_at: UtcDatetime | None
    resolved_at: UtcDatetime | None
    closed_at: UtcDatetime | None
    time_to_acknowledge_seconds: float | None
    time_to_resolve_seconds: float | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class TimelineEntry(OutputModel):
    id: int
    at: UtcDatetime
    actor: str
    actor_id: int | None
    kind: str
    field: str | None
    old_value: str | None
    new_value: str | None


class IncidentMetrics(OutputModel):
    days: int
    incidents: int
    acknowledged: int
    resolved: int
    mtta_seconds: float | None = Field(description="Mean time from opening to acknowledging")
    mttr_seconds: float | None = Field(description="Mean time from opening to resolving")


class EvidenceOut(OutputModel):
    id: int
    incident_id: int
    title: str
    type: str
    content: str | None = Field(description="Text evidence; files are downloaded instead")
    file_name: str | None
    sha256: str
    size_bytes: int
    media_type: str
    supersedes_id: int | None
    superseded_by_id: int | None
    uploaded_by: str
    uploaded_at: UtcDatetime
    download_url: str | None


class CustodyEntry(OutputModel):
    id: int
    at: UtcDatetime
    username: str
    action: str
    ip_address: str | None
    detail: str | None


class TaskCreate(InputModel):
    title: Title
    description: Annotated[str, StringConstraints(max_length=20_000)] = ""
    squad: Squad
    incident_id: Id | None = None
    assignee_id: Id | None = None
    status: TaskStatus = TaskStatus.TODO
    estimated_hours: Hours | None = None
    actual_hours: Hours | None = None
    due_date: date | None = None
    team_id: Id | None = Field(None, description="Defaults to the incident's or your first team")


class TaskUpdate(InputModel):
    title: Title | None = None
    description: Annotated[str, StringConstraints(max_length=20_000)] | None = None
    squad: Squad | None = None
    assignee_id: Id | None = None
    status: TaskStatus | None = None
    estimated_hours: Hours | None = None
    actual_hours: Hours | None = None
    due_date: date | None = None


class TaskOut(OutputModel):
    id: int
    title: str
    description: str
    squad: str
    team_id: int
    incident_id: int | None
    assignee: Person | None
    status: str
    estimated_hours: float | None
    actual_hours: float | None
    due_date: date | None
    completed_at: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class SlaWeek(OutputModel):
    id: str
    week_start: date
    week_end: date
    total_requested_hours: float
    total_delivered_hours: float
    sla_percentage: float
    squad: str | None
    tasks: int
    created_at: UtcDatetime


class SlaForecast(OutputModel):
    week_start: date
    week_end: date
    sla_percentage: float


class SlaMetrics(Page[SlaWeek]):
    """Seed 004's weeks (newest first), in the list shape, with a forecast beside them."""

    forecast: list[SlaForecast]
    forecast_method: str


SortOrder = Literal["newest", "oldest"]
