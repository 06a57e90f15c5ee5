"""Request and response models of the security API (seed 002 `/security`, seed 004
`/secops`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from opscenter.core.schemas import Id, InputModel, OutputModel, UtcDatetime
from opscenter.models.security import FindingStatus, Severity
from opscenter.security.importers.formats import Scanner
from opscenter.security.scan_schemas import ScanSource

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Port = Annotated[int, Field(ge=1, le=65535)]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
TagValue = Annotated[str, StringConstraints(max_length=200)]


class AssetKind(StrEnum):
    HOST = "host"
    SERVICE = "service"
    DATABASE = "database"
    CERTIFICATE = "certificate"
    REPOSITORY = "repository"


class Criticality(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Environment(StrEnum):
    PRODUCTION = "production"
    STAGING = "staging"
    DEVELOPMENT = "development"


class AssetIn(InputModel):
    name: Name
    kind: AssetKind
    environment: Environment = Environment.PRODUCTION
    criticality: Criticality = Criticality.MEDIUM
    address: Annotated[str, StringConstraints(max_length=255)] = ""
    ports: Annotated[list[Port], Field(max_length=100)] = []
    tags: Annotated[dict[TagKey, TagValue], Field(max_length=50)] = {}
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    team_id: Id | None = Field(None, description="The owner team; default: the caller's only team")


class AssetUpdate(InputModel):
    name: Name | None = None
    kind: AssetKind | None = None
    environment: Environment | None = None
    criticality: Criticality | None = None
    address: Annotated[str, StringConstraints(max_length=255)] | None = None
    ports: Annotated[list[Port], Field(max_length=100)] | None = None
    tags: Annotated[dict[TagKey, TagValue], Field(max_length=50)] | None = None
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None


class AssetOut(OutputModel):
    id: int | None = Field(description="None for a server no finding was imported for yet")
    server_id: int | None = Field(description="Set when the asset is a registered server")
    team_id: int
    name: str
    kind: str
    environment: str
    criticality: str
    address: str
    ports: list[int]
    tags: dict[str, str]
    description: str
    open_findings: int


class ImportOut(OutputModel):
    id: int
    asset_id: int
    scanner: Scanner | ScanSource
    filename: str
    sha256: str
    size_bytes: int
    reported: int = Field(description="Distinct findings in the report")
    new: int
    reopened: int
    closed: int = Field(description="Open findings of this asset and scanner not reported again")
    created_at: UtcDatetime


class SlaState(StrEnum):
    WITHIN = "within"
    OVERDUE = "overdue"
    PAUSED = "paused"  # risk accepted: the clock stops
    MET = "met"
    MISSED = "missed"


class FindingOut(OutputModel):
    id: int
    team_id: int
    asset_id: int
    asset_name: str
    scanner: Scanner | ScanSource
    fingerprint: str
    identifier: str
    cwe: str | None
    title: str
    severity: Severity
    cvss_vector: str | None
    cvss_score: float | None
    component: str
    version: str
    fixed_version: str
    location: str
    status: FindingStatus
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    fixed_at: UtcDatetime | None
    due_at: UtcDatetime
    sla_state: SlaState
    acceptance_reason: str | None
    acceptance_requested_by: int | None
    acceptance_approved_by: int | None
    acceptance_expires_at: UtcDatetime | None
    attack_techniques: list[str] = Field(description="ATT&CK technique ids it maps to")


class AcceptanceIn(InputModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=4000)]
    expires_at: datetime = Field(description="When the acceptance ends and the finding reopens")


class SeverityCount(OutputModel):
    severity: Severity
    count: int


class WeekPoint(OutputModel):
    week_start: UtcDatetime
    opened: int
    fixed: int
    open_at_end: int


class MetricsOut(OutputModel):
    open_total: int
    open_by_severity: list[SeverityCount]
    overdue: int
    risk_accepted: int
    mean_time_to_remediate_days: float | None = Field(
        description="Mean days from first seen to fixed, over findings fixed in the window"
    )
    sla_compliance_percent: float | None = Field(
        description="Of the findings fixed in the window, the share fixed by their due date"
    )
    weeks: list[WeekPoint]


class SlaOut(OutputModel):
    days_to_fix: dict[str, int]
