from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, StringConstraints

from opscenter.core.schemas import Id, InputModel, Name, NoControlChars, OutputModel, UtcDatetime

Severity = Literal["info", "warning", "error", "critical"]
Operator = Literal[">", ">=", "<", "<=", "full_within_days"]
#: The metrics a collection round writes; a rule or a history query names one of them.
Metric = Literal[
    "cpu_percent",
    "load_1",
    "load_5",
    "load_15",
    "memory_total_bytes",
    "memory_used_bytes",
    "memory_used_percent",
    "swap_used_percent",
    "disk_total_bytes",
    "disk_used_bytes",
    "disk_used_percent",
    "net_rx_bytes_per_second",
    "net_tx_bytes_per_second",
    "db_connections",
    "db_max_connections",
    "db_replication_lag_seconds",
    "db_size_bytes",
    "storage_total_bytes",
    "storage_used_bytes",
    "storage_free_bytes",
]
METRICS: tuple[str, ...] = get_args(Metric)
#: What "full within N days" can be asked of: the series a forecast exists for.
FORECASTABLE = ("disk_used_bytes", "disk_used_percent", "db_size_bytes", "storage_used_bytes")
Label = Annotated[str, StringConstraints(max_length=200), NoControlChars]
Note = Annotated[str, StringConstraints(max_length=2000), NoControlChars]


class MetricValue(OutputModel):
    metric: str
    label: str
    value: float


class SourceMetrics(OutputModel):
    source: str = Field(description='"host" (this opscenter host), "server:<id>", "storage:<id>"')
    name: str
    server_id: int | None
    storage_id: int | None
    collected_at: UtcDatetime
    metrics: list[MetricValue]


class HistoryPoint(OutputModel):
    timestamp: UtcDatetime
    value: float = Field(description="The mean over the step")
    min: float
    max: float


class HistorySeries(OutputModel):
    label: str
    points: list[HistoryPoint]


class HistoryOut(OutputModel):
    metric: str
    source: str
    server_id: int | None
    window_seconds: int
    step_seconds: int
    resolution_seconds: int = Field(description="The stored resolution the points come from")
    series: list[HistorySeries]


class InfrastructureItem(OutputModel):
    server_id: int | None
    name: str
    type: str
    environment: str | None
    health_status: str
    last_heartbeat: UtcDatetime | None
    collected_at: UtcDatetime | None
    metrics: dict[str, float] = Field(
        description="The latest value of each metric; per-instance ones as metric:label"
    )
    open_alerts: int


class ForecastItem(OutputModel):
    kind: Literal["disk", "database", "storage"]
    source: str
    name: str
    label: str
    server_id: int | None
    storage_id: int | None
    used: float
    capacity: float | None
    unit: str
    growth_per_day: float | None
    days_left: float | None = Field(description="None: not growing, or no capacity known")
    full_at: UtcDatetime | None
    confidence: str = Field(description="high | medium | low | insufficient (too little history)")
    method: str
    points_used: int
    trend_since: UtcDatetime | None


class RuleIn(InputModel):
    name: Name
    metric: Metric
    label: Label = Field("", description='One instance (a mount, a database); "" = every one')
    operator: Operator
    threshold: float = Field(ge=-1e15, le=1e15)
    for_seconds: int = Field(0, ge=0, le=7 * 86400)
    severity: Severity = "warning"
    server_id: Id | None = Field(None, description="One server; none = every source of the team")
    team_id: Id | None = Field(None, description="Defaults to the caller's first team")
    open_incident: bool = Field(False, description="Ask the incidents domain to open one")
    is_enabled: bool = True


class RuleUpdate(InputModel):
    name: Name | None = None
    label: Label | None = None
    operator: Operator | None = None
    threshold: float | None = Field(None, ge=-1e15, le=1e15)
    for_seconds: int | None = Field(None, ge=0, le=7 * 86400)
    severity: Severity | None = None
    open_incident: bool | None = None
    is_enabled: bool | None = None


class RuleOut(OutputModel):
    id: int
    team_id: int
    name: str
    metric: str
    label: str
    operator: str
    threshold: float
    for_seconds: int
    severity: str
    server_id: int | None
    open_incident: bool
    is_enabled: bool
    created_at: UtcDatetime
    updated_at: UtcDatetime


class AlertOut(OutputModel):
    id: int
    rule_id: int
    team_id: int
    source: str
    server_id: int | None
    metric: str
    label: str
    severity: str
    status: str
    value: float
    message: str
    started_at: UtcDatetime
    fired_at: UtcDatetime | None
    acknowledged_at: UtcDatetime | None
    acknowledged_by: str | None
    ack_note: str | None
    resolved_at: UtcDatetime | None


class AcknowledgeIn(InputModel):
    note: Note = ""


class AlertUpdate(InputModel):
    severity: Severity


class CollectOut(OutputModel):
    sources: int
    samples: int
    errors: dict[str, str]
