"""One small class per integration type: what it is configured with, and the requests
it sends for one event. Secrets (tokens, chat webhook URLs) live in `credentials`."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from urllib.parse import quote

from pydantic import Field, StringConstraints, field_validator
from standardwebhooks import Webhook

from opscenter.core.schemas import InputModel
from opscenter.integrations.transport import DeliveryError, OutboundClient, Sent

EVENT_PATTERN = r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$"
EventPattern = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=EVENT_PATTERN)
]
Events = Annotated[list[EventPattern], Field(min_length=1, max_length=50)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^https?://")]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")]
JobName = Annotated[
    str, StringConstraints(min_length=1, max_length=500, pattern=r"^[A-Za-z0-9_. /-]+$")
]
Variables = Annotated[
    dict[Slug, Annotated[str, StringConstraints(max_length=1000)]], Field(max_length=50)
]

_PROBLEM_SUFFIXES = (".failed", ".corrupt", ".overdue", ".interrupted", ".disabled")
_RECOVERY_SUFFIXES = (".completed", ".recovered", ".succeeded", ".passed")
_HEALTHY = {"healthy", "ok", "up", "online"}


@dataclass
class Message:
    """One event on its way to one integration."""

    message_id: str
    event_type: str
    payload: dict[str, Any]  # {"type", "timestamp", "data"}: exactly what webhooks sign
    config: dict[str, Any]
    credentials: dict[str, str]
    signing_secret: str | None
    state: dict[str, Any] = field(default_factory=dict)  # the provider may change it

    @property
    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = self.payload.get("data") or {}
        return value


def severity_of(event_type: str, data: dict[str, Any]) -> str:
    if isinstance(data.get("severity"), str):
        return str(data["severity"])
    if event_type.endswith((".failed", ".corrupt", ".overdue", ".disabled")):
        return "error"
    if event_type.endswith((".interrupted", ".cancelled")):
        return "warning"
    if event_type == "server.health_changed":
        return "info" if str(data.get("health_status", "")).lower() in _HEALTHY else "error"
    return "info"


def summary_of(event_type: str, data: dict[str, Any]) -> str:
    """A one-line human summary: the type and the event's scalar fields."""
    fields = [
        f"{key}={value}"
        for key, value in data.items()
        if isinstance(value, str | int | float | bool) and value != ""
    ]
    return f"{event_type}: {', '.join(fields)}"[:1000] if fields else event_type


def alert_of(event_type: str, data: dict[str, Any]) -> tuple[str, str] | None:
    """(alert key, "problem" | "recovery") for events that open or close an alert; the key
    names what is failing (a backup target, a server, an external job), not one run."""
    family = event_type.split(".", 1)[0]
    subject = None
    if data.get("server_id") is not None and data.get("database_name"):
        subject = f"{data['server_id']}:{data['database_name']}"
    else:
        for name in ("schedule_id", "server_id", "job_name", "external_job_id", "integration_id"):
            if data.get(name) is not None:
                subject = f"{name}={data[name]}"
                break
    if subject is None:
        for name in ("backup_id", "job_id"):
            if data.get(name) is not None:
                subject = f"{name}={data[name]}"
                break
    if subject is None:
        return None
    key = f"{family}:{subject}"
    if event_type == "server.health_changed":
        healthy = str(data.get("health_status", "")).lower() in _HEALTHY
        return key, "recovery" if healthy else "problem"
    if event_type.endswith(_PROBLEM_SUFFIXES):
        return key, "problem"
    if event_type.endswith(_RECOVERY_SUFFIXES):
        return key, "recovery"
    return None


class Provider(ABC):
    name: ClassVar[str]
    config_model: ClassVar[type[InputModel]]
    credentials_model: ClassVar[type[InputModel] | None] = None
    signed: ClassVar[bool] = False  # has a Standard Webhooks signing secret

    @abstractmethod
    def urls(self, config: dict[str, Any], credentials: dict[str, str]) -> list[str]:
        """Every URL this integration sends to, for the outbound address policy."""

    @abstractmethod
    async def send(self, http: OutboundClient, message: Message) -> Sent: ...


# -- generic webhook ---------------------------------------------------------------------
class WebhookConfig(InputModel):
    url: Url
    events: Events


class WebhookProvider(Provider):
    """POSTs the event as JSON, signed per Standard Webhooks (webhook-id/-timestamp/-signature)."""

    name = "webhook"
    config_model = WebhookConfig
    signed = True

    def urls(self, config: dict[str, Any], credentials: dict[str, str]) -> list[str]:
        return [config["url"]]

    async def send(self, http: OutboundClient, message: Message) -> Sent:
        if not message.signing_secret:
            raise DeliveryError("no signing secret: rotate it", permanent=True)
        body = json.dumps(message.payload, separators=(",", ":"))
        now = datetime.now(UTC)
        signature = Webhook(message.signing_secret).sign(message.message_id, now, body)
        headers = {
            "content-type": "application/json",
            "user-agent": "opscenter-webhooks",
            "webhook-id": message.message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        return await http.request(
            "POST", message.config["url"], headers=headers, content=body.encode()
        )


# -- chat --------------------------------------------------------------------------------
class ChatConfig(InputModel):
    events: Events


class ChatCredentials(InputModel):
    webhook_url: Url = Field(description="The incoming-webhook URL; it is a secret")


class SlackProvider(Provider):
    """Slack incoming webhook: `{"text": ...}`."""

    name = "slack"
    config_model = ChatConfig
    credentials_model = ChatCredentials

    def urls(self, config: dict[str, Any], credentials: dict[str, str]) -> list[str]:
        return [credentials["webhook_url"]]

    async def send(self, http: OutboundClient, message: Message) -> Sent:
        severity = severity_of(message.event_type, message.data)
        text = f"[{severity}] {summary_of(message.event_type, message.data)}"
        return await http.request("POST", message.credentials["webhook_url"], json={"text": text})


class TeamsProvider(Provider):
    """Microsoft Teams (Workflows) webhook: a message with one Adaptive Card."""

    name = "teams"
    config_model = ChatConfig
    credentials_model = ChatCredentials

    def urls(self, config: dict[str, Any], credentials: dict[str, str]) -> list[str]:
        return [credentials["webhook_url"]]

    async def send(self, http: OutboundClient, message: Message) -> Sent:
        severity = severity_of(message.event_type, message.data)
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {
                    "type": "TextBlock",
                    "text": f"{severity}: {message.event_type}",
                    "weight": "Bolder",
                },
                {
                    "type": "TextBlock",
                    "text": summary_of(message.event_type, message.data),
                    "wrap": True,
                },
            ],
        }
        body = {
            "type": "message",
            "attachments": [
                {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
            ],
        }
        return await http.request("POST", message.credentials["webhook_url"], json=body)


# -- Jira --------------------------------------------------------------------------------
class JiraConfig(InputModel):
    base_url: Url = Field(description="https://your-site.atlassian.net or a Jira server")
    project_key: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,49}$")]
    username: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    issue_type: Annotated[str, StringConstraints(min_length=1, max_length=100)] = "Bug"
    recovery_transition_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,10}$")] | None = (
        Field(None, description="Transition applied when the alert recovers, e.g. to Done")
    )
    events: Events


class JiraCredentials(InputModel):
    api_token: Secret


class JiraProvider(Provider):
    """One issue per alert key: created on the first problem, commented on repeats,
    commented (and transitioned, if configured) on recovery, then forgotten."""

    name = "jira"
    config_model = JiraConfig
    credentials_model = JiraCredentials

    def urls(self, config: dict[str, Any], credentials: dict[str, str]) -> list[str]:
        return [config["base_url"]]

    def _url(self, config: dict[str, Any], path: str) -> str:
        return str(config["base_url"]).rstrip("/") + path

    async def send(self, http: OutboundClient, message: Message) -> Sent:
        config = message.config
        auth = (config["username"], message.credentials["api_token"])
        summary = summary_of(message.event_type, message.data)
        alert = alert_of(message.event_type, message.data)
        if message.event_type == "integration.test":
            return await http.request("GET", self._url(config, "/rest/api/2/myself"), auth=auth)
        if alert is None:
            return Sent(204, None)  # nothing to open or close
        key, kind = alert
        issues: dict[str, str] = message.state.setdefault("issues", {})
        issue = issues.get(key)
        if kind == "problem" and issue is None:
            sent = await http.request(
                "POST",
                self._url(config, "/rest/api/2/issue"),
                auth=auth,
                json={
                    "fields": {
                        "project": {"key": config["project_key"]},
                        "issuetype": {"name": config.get("issue_type") or "Bug"},
                        "summary": f"[opscenter] {message.event_type} ({key})"[:250],
                        "description": summary,
                        "labels": ["opscenter"],
                    }
                },
            )
            created = sent.body.get("key") if isinstance(sent.body, dict) else None
            if not isinstance(created, str):
                raise DeliveryError("Jira answered without an issue key")
            issues[key] = created
            return sent
        if issue is None:
            return Sent(204, None)  # a recovery with no open issue
        comment = f"{'Recovered' if kind == 'recovery' else 'Again'}: {summary}"
        sent = await http.request(
            "POST",
            self._url(config, f"/rest/api/2/issue/{quote(issue, safe='')}/comment"),
            auth=auth,
            json={"body": comment},
        )
        if kind == "recovery":
            if config.get("recovery_transition_id"):
                sent = await http.request(
                    "POST",
                    self._url(config, f"/rest/api/2/issue/{quote(issue, safe='')}/transitions"),
                    auth=auth,
                    json={"transition": {"id": config["recovery_transition_id"]}},
                )
            del issues[key]
        return sent


# -- CI/CD -------------------------------------------------------------------------------
def _event_variables(message: Message) -> dict[str, str]:
    data = message.data
    variables = {"OPSCENTER_EVENT": message.event_type, "OPSCENTER_EVENT_ID": message.message_id}
    for name in ("backup_id", "job_id", "server_id", "database_name", "status"):
        if data.get(name) is not None:
            variables[f"OPSCENTER_{name.upper()}"] = str(data[name])
    return variables


class GithubConfig(InputModel):
    base_url: Url = Field(
        "https://api.github.com", description="GitHub Enterprise: https://HOST/api/v3"
    )
    owner: Slug
    repo: Slug
    workflow_id: Slug = Field(description="The workflow file name (deploy.yml) or its id")
    ref: Annotated[str, StringConstraints(min_length=1, max_length=250)] = "main"
    inputs: Variables = Field(default_factory=dict)
    events: Events


class TokenCredentials(InputModel):
    token: Secret


class GithubActionsProvider(Provider):
    """workflow_dispatch: POST /repos/{owner}/{repo}/actions/workflows/{id}/dispatches."""

    name = "github_actions"
    config_model = GithubConfig
    credentials_model = TokenCredentials

    def urls(self, config: dict[str, Any], credentials: dict[str, str]) -> list[str]:
        return [config["base_url"]]

    async def send(self, http: OutboundClient, message: Message) -> Sent:
        c = message.config
        path = f"/repos/{c['owner']}/{c['repo']}/actions/workflows/{c['workflow_id']}/dispatches"
        inputs = {**c.get("inputs", {}), "opscenter_event": message.event_type}
        return await http.request(
            "POST",
            str(c["base_url"]).rstrip("/") + path,
            headers={
                "Authorization": f"Bearer {message.credentials['token']}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            json={"ref": c["ref"], "inputs": inputs},
        )


class GitlabConfig(InputModel):
    base_url: Url = Field("https://gitlab.com", description="A self-hosted GitLab's address")
    project_id: Annotated[str, StringConstraints(min_length=1, max_length=300)] = Field(
        description="Numeric id or the path (group/project)"
    )
    ref: Annotated[str, StringConstraints(min_length=1, max_length=250)] = "main"
    variables: Variables = Field(default_factory=dict)
    events: Events


class GitlabCredentials(InputModel):
    trigger_token: Secret


class GitlabCiProvider(Provider):
    """Pipeline trigger: POST /api/v4/projects/{id}/trigger/pipeline (token, ref, variables)."""

    name = "gitlab_ci"
    config_model = GitlabConfig
    credentials_model = GitlabCredentials

    def urls(self, config: dict[str, Any], credentials: dict[str, str]) -> list[str]:
        return [config["base_url"]]

    async def send(self, http: OutboundClient, message: Message) -> Sent:
        c = message.config
        form = {"token": message.credentials["trigger_token"], "ref": c["ref"]}
        for name, value in {**c.get("variables", {}), **_event_variables(message)}.items():
            form[f"variables[{name}]"] = value
        project = quote(str(c["project_id"]), safe="")
        url = str(c["base_url"]).rstrip("/") + f"/api/v4/projects/{project}/trigger/pipeline"
        return await http.request("POST", url, data=form)


class JenkinsConfig(InputModel):
    base_url: Url
    job_name: JobName = Field(description="Folders with '/': team/deploy-staging")
    username: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    parameters: Variables = Field(default_factory=dict)
    events: Events

    @field_validator("job_name")
    @classmethod
    def _no_dot_segments(cls, value: str) -> str:
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError("must not contain '.' or '..' segments")
        return value


class JenkinsCredentials(InputModel):
    api_token: Secret


class JenkinsProvider(Provider):
    """POST /job/{name}/buildWithParameters with basic auth (user + API token: no crumb)."""

    name = "jenkins"
    config_model = JenkinsConfig
    credentials_model = JenkinsCredentials

    def urls(self, config: dict[str, Any], credentials: dict[str, str]) -> list[str]:
        return [config["base_url"]]

    async def send(self, http: OutboundClient, message: Message) -> Sent:
        c = message.config
        job_path = "".join(
            f"/job/{quote(part, safe='')}" for part in c["job_name"].split("/") if part
        )
        params = {**c.get("parameters", {}), **_event_variables(message)}
        return await http.request(
            "POST",
            str(c["base_url"]).rstrip("/") + f"{job_path}/buildWithParameters",
            params=params,
            auth=(c["username"], message.credentials["api_token"]),
        )


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        WebhookProvider(),
        SlackProvider(),
        TeamsProvider(),
        JiraProvider(),
        GithubActionsProvider(),
        GitlabCiProvider(),
        JenkinsProvider(),
    )
}


# Published every few seconds of every running job: sent only when named exactly.
CHATTY = frozenset({"backup.progress", "job.progress"})


def matches(patterns: list[str], event_type: str) -> bool:
    """Exact types, `prefix.*` and `*`; progress events only when named exactly."""
    if event_type in CHATTY:
        return event_type in patterns
    for pattern in patterns:
        if pattern in ("*", event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False
