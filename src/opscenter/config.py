"""Settings, read once from the environment (OPSCENTER_* and seed 004's names) or `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Secrets that appear in docs and tutorials; refused outside development.
SeverityName = Literal["critical", "high", "medium", "low", "info"]
DEFAULT_SLA_DAYS: dict[SeverityName, int] = {
    "critical": 7,
    "high": 30,
    "medium": 90,
    "low": 180,
    "info": 365,
}
WEAK_SECRETS = frozenset(
    {"", "secret", "changeme", "change-me", "your-secret-key-here", "password", "admin123"}
)


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"OPSCENTER_{name}", name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    environment: Literal["development", "test", "production"] = Field(
        "development", validation_alias=_env("ENVIRONMENT")
    )
    host: str = Field("127.0.0.1", validation_alias="OPSCENTER_HOST")
    port: int = Field(8000, ge=1, le=65535, validation_alias="OPSCENTER_PORT")
    data_dir: Path = Field(Path("./data"), validation_alias="OPSCENTER_DATA_DIR")
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    # Connections per server process (as many again may open under a burst), and how
    # long a request waits for one before it is answered 503 with Retry-After.
    db_pool_size: int = Field(20, ge=1, le=500, validation_alias="OPSCENTER_DB_POOL_SIZE")
    db_pool_timeout: float = Field(5.0, gt=0, le=120, validation_alias="OPSCENTER_DB_POOL_TIMEOUT")
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    # How events reach the other server processes: not at all (one process), Redis
    # pub/sub at REDIS_URL, or LISTEN/NOTIFY on the PostgreSQL metadata database.
    event_bus: Literal["memory", "redis", "postgres"] = Field(
        "memory", validation_alias="OPSCENTER_EVENT_BUS"
    )

    jwt_secret: str | None = Field(None, validation_alias=_env("JWT_SECRET"))
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = Field(
        "HS256", validation_alias=_env("JWT_ALGORITHM")
    )
    # Access tokens are short-lived; the refresh token carries the session.
    access_token_minutes: int = Field(
        15, ge=1, le=1440, validation_alias="OPSCENTER_ACCESS_TOKEN_MINUTES"
    )
    jwt_expiration_hours: int = Field(24 * 14, ge=1, validation_alias=_env("JWT_EXPIRATION_HOURS"))
    # How long a process may reuse who a token or key stands for (user, role, teams, key)
    # without reading it again: a change made through another process (disabling a user,
    # revoking a key, logging out) takes effect there within this many seconds; in the
    # process that made it, at once. 0 reads them on every request.
    auth_cache_seconds: float = Field(
        5, ge=0, le=60, validation_alias="OPSCENTER_AUTH_CACHE_SECONDS"
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("ALLOWED_ORIGINS")
    )

    # Hosts or networks (CIDR) that outgoing connections may reach although internal.
    outbound_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="OPSCENTER_OUTBOUND_ALLOWLIST"
    )
    # Directories under which files and SQLite restores may write on this host, besides
    # the data dir's `restores` area (comma-separated absolute paths).
    restore_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, validation_alias="OPSCENTER_RESTORE_ROOTS"
    )
    admin_email: str = Field("admin@localhost", validation_alias="OPSCENTER_ADMIN_EMAIL")
    admin_password: str | None = Field(None, validation_alias="OPSCENTER_ADMIN_PASSWORD")

    max_body_bytes: int = Field(1024 * 1024, ge=1024, validation_alias="OPSCENTER_MAX_BODY_BYTES")
    # Incident evidence files stream to storage and have their own limit (413 beyond).
    evidence_max_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, validation_alias="OPSCENTER_EVIDENCE_MAX_BYTES"
    )
    # Scanner reports are read whole (json.load) after streaming to disk: this bounds it.
    security_import_max_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, validation_alias="OPSCENTER_SECURITY_IMPORT_MAX_BYTES"
    )
    # A report larger than this is imported by a job (202) instead of in the request (201).
    security_import_sync_bytes: int = Field(
        8 * 1024 * 1024, ge=0, validation_alias="OPSCENTER_SECURITY_IMPORT_SYNC_BYTES"
    )
    # Days to fix a finding, per severity (JSON in the environment).
    security_sla_days: dict[SeverityName, int] = Field(
        default_factory=lambda: dict(DEFAULT_SLA_DAYS),
        validation_alias="OPSCENTER_SECURITY_SLA_DAYS",
    )
    rate_limit_default: str = Field("100/minute", validation_alias="OPSCENTER_RATE_LIMIT")
    rate_limit_write: str = Field("30/minute", validation_alias="OPSCENTER_RATE_LIMIT_WRITE")
    rate_limit_login_account: str = Field(
        "5/minute", validation_alias="OPSCENTER_RATE_LIMIT_LOGIN_ACCOUNT"
    )
    rate_limit_login_address: str = Field(
        "20/minute", validation_alias="OPSCENTER_RATE_LIMIT_LOGIN_ADDRESS"
    )
    rate_limit_enabled: bool = Field(True, validation_alias="OPSCENTER_RATE_LIMIT_ENABLED")
    # A backup that moves no byte for this long fails as `stalled`; 0 = no wall-clock limit.
    backup_stall_seconds: float = Field(
        600, gt=0, validation_alias="OPSCENTER_BACKUP_STALL_SECONDS"
    )
    backup_time_limit_seconds: float = Field(
        0, ge=0, validation_alias="OPSCENTER_BACKUP_TIME_LIMIT_SECONDS"
    )
    # Transient failures are retried this many times, after 30 s, 2 min, 8 min, ...
    backup_retries: int = Field(2, ge=0, le=10, validation_alias="OPSCENTER_BACKUP_RETRIES")
    backup_retry_seconds: float = Field(
        30, ge=0, le=3600, validation_alias="OPSCENTER_BACKUP_RETRY_SECONDS"
    )
    ws_keepalive_seconds: float = Field(
        30, gt=0, le=3600, validation_alias="OPSCENTER_WS_KEEPALIVE"
    )
    job_concurrency: int = Field(2, ge=1, le=64, validation_alias="OPSCENTER_JOB_CONCURRENCY")
    # Where jobs run: "embedded" in the server process; "procrastinate" on PostgreSQL, taken
    # by any number of `opscenter worker` (and `opscenter serve`) processes.
    job_engine: Literal["embedded", "procrastinate"] = Field(
        "embedded", validation_alias="OPSCENTER_JOB_ENGINE"
    )
    # False for an API-only process (`opscenter serve --no-jobs`); needs the procrastinate engine.
    run_jobs: bool = Field(True, validation_alias="OPSCENTER_RUN_JOBS")
    # A running job writes a heartbeat this often; one silent for 3 beats is interrupted.
    job_heartbeat_seconds: float = Field(
        10, ge=0.2, le=600, validation_alias="OPSCENTER_JOB_HEARTBEAT_SECONDS"
    )
    # On SIGTERM a worker lets its running jobs finish for this long, then hands them back.
    job_shutdown_grace_seconds: float = Field(
        60, ge=0, le=86400, validation_alias="OPSCENTER_JOB_SHUTDOWN_GRACE_SECONDS"
    )
    # Seconds between server health checks; 0 turns the periodic check off.
    health_interval_seconds: float = Field(
        60, ge=0, le=86400, validation_alias="OPSCENTER_HEALTH_INTERVAL"
    )
    # Seconds between audit chain checkpoints (the entries written since the last one are
    # verified, so an assessment walks only those of the last interval); 0 turns them off.
    audit_checkpoint_interval_seconds: float = Field(
        900, ge=0, le=86400, validation_alias="OPSCENTER_AUDIT_CHECKPOINT_INTERVAL"
    )
    # Seconds between resource collection rounds (this host, servers, storage); 0 turns it off.
    resources_interval_seconds: float = Field(
        15, ge=0, le=86400, validation_alias="OPSCENTER_RESOURCES_INTERVAL"
    )
    # Seconds between scheduler rounds (due schedules, daily retention); 0 turns it off.
    scheduler_interval_seconds: float = Field(
        15, ge=0, le=3600, validation_alias="OPSCENTER_SCHEDULER_INTERVAL"
    )
    # Seconds between checks for external jobs whose report is overdue; 0 turns it off.
    external_jobs_check_seconds: float = Field(
        60, ge=0, le=3600, validation_alias="OPSCENTER_EXTERNAL_JOBS_INTERVAL"
    )
    # Integration deliveries: delays before each retry (seconds, comma-separated), and the
    # number of failed attempts in a row after which an integration is disabled.
    integration_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 3600.0],
        validation_alias="OPSCENTER_INTEGRATION_RETRY_SCHEDULE",
    )
    integration_disable_after: int = Field(
        20, ge=1, le=10_000, validation_alias="OPSCENTER_INTEGRATION_DISABLE_AFTER"
    )
    integration_timeout_seconds: float = Field(
        10, gt=0, le=300, validation_alias="OPSCENTER_INTEGRATION_TIMEOUT"
    )
    # Notification channels: the longest one send may take, and how often a channel or user
    # hears about the same event of the same subject when no alert policy set a window.
    notify_timeout_seconds: float = Field(
        20, gt=0, le=300, validation_alias="OPSCENTER_NOTIFY_TIMEOUT"
    )
    notify_default_throttle_seconds: float = Field(
        300, ge=0, le=86400, validation_alias="OPSCENTER_NOTIFY_DEFAULT_THROTTLE"
    )
    log_level: str = Field("INFO", validation_alias="OPSCENTER_LOG_LEVEL")
    secure_cookies: bool = Field(False, validation_alias="OPSCENTER_SECURE_COOKIES")
    # A process without the API (`opscenter worker`) serves its own /metrics on this port
    # (at OPSCENTER_HOST); 0: none. The API server's /metrics is on its own port.
    metrics_port: int = Field(0, ge=0, le=65535, validation_alias="OPSCENTER_METRICS_PORT")

    @field_validator("allowed_origins", "outbound_allowlist", "restore_roots", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _transports_are_there(self) -> Settings:
        if self.event_bus == "redis" and not self.redis_url:
            raise ValueError("OPSCENTER_EVENT_BUS=redis needs OPSCENTER_REDIS_URL")
        postgres = self.effective_database_url.startswith("postgresql+asyncpg://")
        if self.job_engine == "procrastinate" and not postgres:
            raise ValueError(
                "OPSCENTER_JOB_ENGINE=procrastinate needs a PostgreSQL DATABASE_URL: the job "
                "queue lives in the same database as the metadata"
            )
        if not self.run_jobs and self.job_engine == "embedded":
            raise ValueError(
                "an API-only process (--no-jobs, OPSCENTER_RUN_JOBS=false) needs "
                "OPSCENTER_JOB_ENGINE=procrastinate, so that workers take the jobs"
            )
        if self.event_bus == "postgres" and not postgres:
            raise ValueError(
                "OPSCENTER_EVENT_BUS=postgres needs a PostgreSQL DATABASE_URL; "
                "with the embedded SQLite there is one process and nothing to relay"
            )
        return self

    @field_validator("restore_roots")
    @classmethod
    def _absolute_roots(cls, value: list[Path]) -> list[Path]:
        if any(not root.is_absolute() or ".." in root.parts for root in value):
            raise ValueError("OPSCENTER_RESTORE_ROOTS takes absolute paths without '..'")
        return value

    @field_validator("security_sla_days")
    @classmethod
    def _every_severity(cls, value: dict[SeverityName, int]) -> dict[SeverityName, int]:
        if any(not 1 <= days <= 3650 for days in value.values()):
            raise ValueError("days to fix must be 1..3650")
        return {**DEFAULT_SLA_DAYS, **value}  # a severity left out keeps its default

    @field_validator("integration_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(item) for item in value.split(",") if item.strip()]
        return value

    @field_validator("integration_retry_schedule")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if len(value) > 20 or any(not 0 <= delay <= 86400 for delay in value):
            raise ValueError("at most 20 delays, each 0..86400 seconds")
        return value

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Settings:
        if self.environment == "production":
            if self.jwt_secret is not None and (
                self.jwt_secret.lower() in WEAK_SECRETS or len(self.jwt_secret) < 32
            ):
                raise ValueError(
                    "JWT_SECRET is weak: use at least 32 random characters, or unset it "
                    "to let opscenter generate one in the data dir"
                )
            if self.admin_password is not None and self.admin_password in WEAK_SECRETS:
                raise ValueError("OPSCENTER_ADMIN_PASSWORD is a well-known weak password")
        return self

    @property
    def effective_database_url(self) -> str:
        """SQLAlchemy async URL; the embedded default is a SQLite file in the data dir."""
        url = self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'opscenter.db'}"
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"


@lru_cache
def get_settings() -> Settings:
    return Settings()
