from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints

from opscenter.core.schemas import Id, InputModel, Name, NoControlChars, OutputModel, UtcDatetime

Provider = Literal["openai", "anthropic", "local"]
Period = Literal["day", "week", "month"]
Label = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True), NoControlChars
]
ApiKey = Annotated[str, StringConstraints(min_length=1, max_length=500), NoControlChars]
PromptText = Annotated[str, StringConstraints(max_length=20_000), NoControlChars]
Price = Annotated[float, Field(ge=0, le=1)]


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ValueError("must be an http:// or https:// URL, e.g. https://api.openai.com/v1")
    if "@" in value.split("//", 1)[1].split("/", 1)[0]:
        raise ValueError("put the API key in api_key, not in the URL")
    if "?" in value or "#" in value:
        raise ValueError("give the base URL without a query or fragment")
    return value.rstrip("/")


Endpoint = Annotated[
    str, StringConstraints(max_length=2000), NoControlChars, AfterValidator(_http_url)
]


class Parameters(InputModel):
    """Generation settings sent with every call of the model."""

    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int = Field(1024, ge=1, le=200_000)
    top_p: float | None = Field(None, gt=0, le=1)
    timeout_seconds: float = Field(60, gt=0, le=600, description="Per attempt")


class ModelCreate(InputModel):
    name: Name
    provider: Provider = Field(
        description="openai: any OpenAI-compatible chat-completions endpoint; anthropic: the "
        "Messages API; local: an OpenAI-compatible local server (Ollama, llama.cpp), key optional"
    )
    model: ModelName = Field(description="The provider's model name, e.g. gpt-4o-mini")
    endpoint: Endpoint | None = Field(
        None,
        description="Base URL; defaults to https://api.openai.com/v1 or "
        "https://api.anthropic.com. Required for local.",
    )
    api_key: ApiKey | None = Field(None, description="Stored encrypted; never shown again")
    parameters: Parameters = Field(default_factory=Parameters)
    price_per_input_token: Price = Field(0.0, description="USD per input token")
    price_per_output_token: Price = Field(0.0, description="USD per output token")
    is_enabled: bool = True
    team_id: Id | None = Field(None, description="Defaults to the caller's first team")


class ModelUpdate(InputModel):
    name: Name | None = None
    model: ModelName | None = None
    endpoint: Endpoint | None = None
    api_key: ApiKey | None = Field(None, description="A new key; left out keeps the old one")
    clear_api_key: bool = False
    parameters: Parameters | None = None
    price_per_input_token: Price | None = None
    price_per_output_token: Price | None = None
    is_enabled: bool | None = None


class ModelOut(OutputModel):
    id: int
    team_id: int
    name: str
    provider: str
    model: str
    endpoint: str
    has_api_key: bool
    parameters: dict[str, Any]
    price_per_input_token: float
    price_per_output_token: float
    is_enabled: bool
    cooldown_until: UtcDatetime | None
    last_error: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


# -- prompts ---------------------------------------------------------------------------
class PromptCreate(InputModel):
    """A new version of the prompt `name` (version 1 when the name is new)."""

    name: Slug
    template: Annotated[PromptText, StringConstraints(min_length=1)] = Field(
        description="The user message; {{variable}} marks a value given at call time"
    )
    system: PromptText = Field("", description="Optional system message, variables allowed")
    labels: list[Label] = Field([], max_length=10, description="Moved here from older versions")
    description: Annotated[str, StringConstraints(max_length=2000), NoControlChars] = ""
    team_id: Id | None = Field(None, description="Defaults to the caller's first team")


class LabelsUpdate(InputModel):
    labels: list[Label] = Field(max_length=10, description="This version's labels from now on")


class PromptOut(OutputModel):
    id: int
    team_id: int
    name: str
    version: int
    system: str
    template: str
    variables: list[str]
    labels: list[str]
    description: str
    created_at: UtcDatetime


Variables = dict[
    Annotated[str, StringConstraints(max_length=64)],
    Annotated[str, StringConstraints(max_length=50_000)],
]


class RenderRequest(InputModel):
    name: Slug
    label: Label | None = Field(None, description="Defaults to production")
    version: int | None = Field(None, ge=1, le=1_000_000, description="Instead of a label")
    variables: Variables = Field(default_factory=dict, max_length=100)
    team_id: Id | None = None


class Message(OutputModel):
    role: str
    content: str


class Rendered(OutputModel):
    prompt_id: int
    name: str
    version: int
    messages: list[Message]


# -- fallback chains and budget ------------------------------------------------------------
class Chain(InputModel):
    purpose: Slug = Field(description="default, backup_explanation, ... (default is the fallback)")
    model_ids: list[Id] = Field(min_length=1, max_length=10, description="Tried in this order")
    max_retries: int = Field(1, ge=0, le=5, description="Per model, on timeouts, 429 and 5xx")
    backoff_seconds: float = Field(0.5, ge=0, le=30, description="Doubles with each retry")
    cooldown_seconds: int = Field(60, ge=0, le=86_400, description="A failed model is skipped")


class FallbackConfigUpdate(InputModel):
    chains: list[Chain] = Field(max_length=50)
    budget_usd: float | None = Field(None, ge=0, le=1_000_000, description="None: no budget")
    budget_period: Period = "month"
    team_id: Id | None = Field(None, description="Defaults to the caller's first team")


class ChainOut(OutputModel):
    purpose: str
    model_ids: list[int]
    max_retries: int
    backoff_seconds: float
    cooldown_seconds: int


class FallbackConfigOut(OutputModel):
    team_id: int
    chains: list[ChainOut]
    budget_usd: float | None
    budget_period: str
    period_start: UtcDatetime
    period_end: UtcDatetime
    spent_usd: float = Field(description="Cost of the calls made in the current period")
    remaining_usd: float | None
    updated_at: UtcDatetime | None


# -- calls ----------------------------------------------------------------------------------
class RunRequest(InputModel):
    """Render a prompt version and send it through the purpose's fallback chain."""

    prompt: Slug
    label: Label | None = Field(None, description="Defaults to production")
    version: int | None = Field(None, ge=1, le=1_000_000)
    variables: Variables = Field(default_factory=dict, max_length=100)
    purpose: Slug = "default"
    team_id: Id | None = None


class AttemptOut(OutputModel):
    model_id: int | None
    model_name: str
    attempt: int
    outcome: str
    status_code: int | None
    latency_ms: float
    error: str | None


class RunOut(OutputModel):
    request_id: str
    text: str
    model_id: int
    model_name: str
    provider: str
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_ms: float
    attempts: list[AttemptOut]


class CallOut(OutputModel):
    id: int
    request_id: str
    model_id: int | None
    model_name: str
    purpose: str
    attempt: int
    outcome: str
    status_code: int | None
    latency_ms: float
    tokens_in: int
    tokens_out: int
    cost_usd: float
    final: bool
    error: str | None
    created_at: UtcDatetime


class Bucket(OutputModel):
    start: UtcDatetime
    calls: int
    failures: int
    avg_latency_ms: float | None
    tokens_in: int
    tokens_out: int
    cost_usd: float


class Metrics(OutputModel):
    model_id: int
    window_hours: int
    since: UtcDatetime
    calls: int = Field(description="Attempts sent to this model")
    successes: int
    failures: int
    success_rate: float | None
    answered: int = Field(description="Requests this model finally answered")
    by_outcome: dict[str, int]
    latency_ms_avg: float | None
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    latency_ms_max: float | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    series: list[Bucket]


class Explanation(OutputModel):
    backup_id: int
    explanation: str
    model_id: int
    model_name: str
    provider: str
    model: str
    prompt_version: int | None = Field(description="None: the built-in prompt")
    request_id: str
    cost_usd: float


class IncidentSummary(OutputModel):
    incident_id: int
    team_id: int
    summary: str
    timeline_entries: int = Field(description="Timeline entries sent to the model")
    model_id: int
    model_name: str
    provider: str
    model: str
    prompt_version: int | None = Field(description="None: the built-in prompt")
    request_id: str
    cost_usd: float
