from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from opscenter.core.schemas import InputModel, Name, OutputModel, UtcDatetime

Secret = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class IntegrationType(StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"
    TEAMS = "teams"
    JIRA = "jira"
    GITHUB_ACTIONS = "github_actions"
    GITLAB_CI = "gitlab_ci"
    JENKINS = "jenkins"


class IntegrationCreate(InputModel):
    name: Name
    type: IntegrationType
    config: dict[str, Any] = Field(
        description="The type's settings, with `events`: event types or `prefix.*` patterns"
    )
    credentials: dict[FieldName, Secret] | None = Field(
        None, description="Tokens, passwords, chat webhook URLs: encrypted, never returned"
    )
    is_active: bool = True


class IntegrationUpdate(InputModel):
    name: Name | None = None
    config: dict[str, Any] | None = Field(None, description="The type's whole config")
    credentials: dict[FieldName, Secret] | None = Field(None, description="Replaces stored ones")
    is_active: bool | None = Field(None, description="true re-enables a disabled integration")


class IntegrationOut(OutputModel):
    id: int
    name: str
    type: str
    config: dict[str, Any]
    events: list[str]
    credential_fields: list[str]
    has_signing_secret: bool
    is_active: bool
    disabled_reason: str | None
    consecutive_failures: int
    last_success_at: UtcDatetime | None
    last_failure_at: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class IntegrationCreated(IntegrationOut):
    signing_secret: str | None = Field(
        description="Standard Webhooks secret (whsec_...) of a `webhook`: shown this once"
    )


class SigningSecret(OutputModel):
    id: int
    signing_secret: str = Field(description="The new secret: shown this once, store it now")


class Subscription(OutputModel):
    event_type: str = Field(description="An event type, or a `prefix.*` pattern")


class Attempt(OutputModel):
    attempt: int
    at: str
    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None


class DeliveryOut(OutputModel):
    id: int
    integration_id: int
    message_id: str
    event_type: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: UtcDatetime | None
    last_status_code: int | None
    last_error: str | None
    last_latency_ms: int | None
    delivered_at: UtcDatetime | None
    redelivery_of: int | None
    attempts_log: list[Attempt]
    created_at: UtcDatetime


class HealthOut(OutputModel):
    integration_id: int
    is_active: bool
    disabled_reason: str | None
    consecutive_failures: int
    last_success_at: UtcDatetime | None
    last_failure_at: UtcDatetime | None
    window: int = Field(description="How many of the latest deliveries the rates cover")
    succeeded: int
    failed: int
    pending: int
    error_rate: float = Field(description="failed / (succeeded + failed) in the window")
    average_latency_ms: float | None
    recent: list[DeliveryOut]


class ProbeResult(OutputModel):
    success: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    delivery_id: int


class SyncResult(OutputModel):
    id: int
    status: str
    queued: int = Field(description="Deliveries that will be sent now")
