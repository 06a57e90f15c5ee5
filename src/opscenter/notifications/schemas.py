from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, EmailStr, Field, StringConstraints

from opscenter.core.schemas import Id, InputModel, Name, NoControlChars, OutputModel, UtcDatetime

Level = Literal["info", "warning", "error", "critical"]
LEVELS: tuple[str, ...] = ("info", "warning", "error", "critical")
ChannelType = Literal["slack", "teams", "discord", "email", "telegram", "ntfy", "webhook"]
DeliveryChannel = Literal["in_app", "email"]

_PATTERN = re.compile(r"^(\*|[a-z_]+(\.([a-z_]+|\*))?)$")


def _event_pattern(value: str) -> str:
    if not _PATTERN.match(value):
        raise ValueError("an event type like 'backup.failed', a prefix like 'backup.*', or '*'")
    return value


EventPattern = Annotated[str, StringConstraints(max_length=64), AfterValidator(_event_pattern)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200), NoControlChars]


def _http_url(schemes: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if not re.match(rf"^({'|'.join(schemes)})://[^/\s?#]+", value):
            raise ValueError(f"must be a {' or '.join(schemes)} URL")
        return value

    return AfterValidator(check)


Url = Annotated[
    str, StringConstraints(max_length=2000), NoControlChars, _http_url(("http", "https"))
]
HttpsUrl = Annotated[str, StringConstraints(max_length=2000), NoControlChars, _http_url(("https",))]


# -- channel configurations, one per type (secret fields are marked in channels.py) -----------
class SlackConfig(InputModel):
    webhook_url: Url = Field(description="https://hooks.slack.com/services/T.../B.../...")
    channel: Annotated[str, StringConstraints(pattern=r"^[#@]?[A-Za-z0-9_.-]{1,80}$")] | None = None


class DiscordConfig(InputModel):
    webhook_url: Url = Field(description="https://discord.com/api/webhooks/<id>/<token>")


class TeamsConfig(InputModel):
    webhook_url: HttpsUrl = Field(
        description="A Teams workflow (Power Automate) URL: https://.../workflows/<id>/"
        "triggers/manual/paths/invoke?...&sig=..."
    )


class TelegramConfig(InputModel):
    bot_token: Annotated[str, StringConstraints(pattern=r"^\d{1,20}:[A-Za-z0-9_-]{10,100}$")]
    chat_id: Annotated[str, StringConstraints(pattern=r"^-?\d{1,20}$|^@[A-Za-z0-9_]{4,64}$")]
    api_url: Url = Field("https://api.telegram.org", description="A self-hosted Bot API server")


class NtfyConfig(InputModel):
    url: Url = Field(description="The server and topic: https://ntfy.sh/<topic>")
    token: ShortText | None = Field(None, description="An access token (tk_...)")


class WebhookConfig(InputModel):
    url: Url = Field(description="Receives a JSON POST: {version, title, message, type}")


class EmailConfig(InputModel):
    smtp_host: Annotated[str, StringConstraints(min_length=1, max_length=253), NoControlChars]
    smtp_port: int = Field(587, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "starttls"
    username: ShortText | None = None
    password: ShortText | None = None
    from_address: EmailStr
    to: list[EmailStr] = Field(min_length=1, max_length=50)


CONFIG_MODELS: dict[str, type[InputModel]] = {
    "slack": SlackConfig,
    "discord": DiscordConfig,
    "teams": TeamsConfig,
    "telegram": TelegramConfig,
    "ntfy": NtfyConfig,
    "webhook": WebhookConfig,
    "email": EmailConfig,
}


class ChannelCreate(InputModel):
    name: Name
    type: ChannelType
    config: dict[str, Any] = Field(description="The settings of the type; see the *Config schemas")
    is_enabled: bool = True
    team_id: Id | None = Field(None, description="Defaults to the caller's first team")


class ChannelUpdate(InputModel):
    name: Name | None = None
    is_enabled: bool | None = None
    config: dict[str, Any] | None = Field(
        None, description="Fields to change; secret fields left out keep their value"
    )


class ChannelOut(OutputModel):
    id: int
    team_id: int
    name: str
    type: str
    is_enabled: bool
    config: dict[str, Any] = Field(description="The non-secret settings")
    secret_fields: list[str] = Field(description="Which secret settings are set (never shown)")
    has_secret: bool
    target_host: str
    last_success_at: UtcDatetime | None
    last_error: str | None
    last_error_at: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class TestRequest(InputModel):
    channel_id: Id
    title: ShortText = "opscenter test notification"
    message: Annotated[str, StringConstraints(min_length=1, max_length=2000), NoControlChars] = (
        "If you can read this, the channel works."
    )


class TestResult(OutputModel):
    channel_id: int
    delivered: bool
    error: str | None


# -- alert policies -----------------------------------------------------------------------------
class OpenIncident(InputModel):
    """The policy's `open_incident` action: a matching event opens an incident (a repeat of
    the same alert adds to the open one). Values are the incident's defaults."""

    severity: Literal["critical", "high", "medium", "low"] = "high"
    environment: Literal["production", "staging", "development"] = Field(
        "production", description="Used when the event's server names no such environment"
    )
    squad: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ] = "ops"


class PolicyCreate(InputModel):
    name: Name
    description: Annotated[str, StringConstraints(max_length=2000), NoControlChars] = ""
    is_enabled: bool = True
    event_types: list[EventPattern] = Field(["*"], min_length=1, max_length=50)
    min_severity: Level = "info"
    environments: list[Annotated[str, StringConstraints(max_length=20)]] = Field([], max_length=10)
    server_ids: list[Id] = Field([], max_length=200)
    schedule_ids: list[Id] = Field([], max_length=200)
    channel_ids: list[Id] = Field([], max_length=50)
    user_ids: list[Id] = Field([], max_length=200)
    team_ids: list[Id] = Field([], max_length=50, description="Members get it in-app")
    throttle_seconds: int = Field(300, ge=0, le=7 * 86400)
    open_incident: OpenIncident | None = Field(None, description="Also open an incident")
    team_id: Id | None = Field(None, description="Defaults to the caller's first team")


class PolicyUpdate(InputModel):
    name: Name | None = None
    description: Annotated[str, StringConstraints(max_length=2000), NoControlChars] | None = None
    is_enabled: bool | None = None
    event_types: list[EventPattern] | None = Field(None, min_length=1, max_length=50)
    min_severity: Level | None = None
    environments: list[Annotated[str, StringConstraints(max_length=20)]] | None = Field(
        None, max_length=10
    )
    server_ids: list[Id] | None = Field(None, max_length=200)
    schedule_ids: list[Id] | None = Field(None, max_length=200)
    channel_ids: list[Id] | None = Field(None, max_length=50)
    user_ids: list[Id] | None = Field(None, max_length=200)
    team_ids: list[Id] | None = Field(None, max_length=50)
    throttle_seconds: int | None = Field(None, ge=0, le=7 * 86400)
    open_incident: OpenIncident | None = Field(None, description="null removes the action")


class PolicyOut(OutputModel):
    id: int
    team_id: int
    name: str
    description: str
    is_enabled: bool
    event_types: list[str]
    min_severity: str
    environments: list[str]
    server_ids: list[int]
    schedule_ids: list[int]
    channel_ids: list[int]
    user_ids: list[int]
    team_ids: list[int]
    throttle_seconds: int
    open_incident: dict[str, Any] | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


# -- the in-app notification center ----------------------------------------------------------
class NotificationOut(OutputModel):
    id: int
    type: str
    level: str
    title: str
    message: str
    details: dict[str, Any]
    read: bool
    read_at: UtcDatetime | None
    created_at: UtcDatetime


class UnreadCount(OutputModel):
    unread: int


class MarkedRead(OutputModel):
    marked: int


class Preference(InputModel):
    event_type: EventPattern
    channel: DeliveryChannel
    enabled: bool = True
    min_level: Level = "info"


class PreferencesUpdate(InputModel):
    preferences: list[Preference] = Field(max_length=200)


class PreferenceOut(OutputModel):
    event_type: str
    channel: str
    enabled: bool
    min_level: str


class PreferencesOut(OutputModel):
    preferences: list[PreferenceOut]
    channels: list[str] = Field(description="Delivery channels a preference can name")
