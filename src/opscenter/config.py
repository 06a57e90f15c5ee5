"""Settings, read once from the environment (OPSCENTER_* and seed 004's names) or `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Secrets that appear in docs and tutorials; refused outside development.
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
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))

    jwt_secret: str | None = Field(None, validation_alias=_env("JWT_SECRET"))
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = Field(
        "HS256", validation_alias=_env("JWT_ALGORITHM")
    )
    # Access tokens are short-lived; the refresh token carries the session.
    access_token_minutes: int = Field(
        15, ge=1, le=1440, validation_alias="OPSCENTER_ACCESS_TOKEN_MINUTES"
    )
    jwt_expiration_hours: int = Field(24 * 14, ge=1, validation_alias=_env("JWT_EXPIRATION_HOURS"))
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("ALLOWED_ORIGINS")
    )

    # Hosts or networks (CIDR) that outgoing connections may reach although internal.
    outbound_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="OPSCENTER_OUTBOUND_ALLOWLIST"
    )
    admin_email: str = Field("admin@localhost", validation_alias="OPSCENTER_ADMIN_EMAIL")
    admin_password: str | None = Field(None, validation_alias="OPSCENTER_ADMIN_PASSWORD")

    max_body_bytes: int = Field(1024 * 1024, ge=1024, validation_alias="OPSCENTER_MAX_BODY_BYTES")
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
    # Seconds between server health checks; 0 turns the periodic check off.
    health_interval_seconds: float = Field(
        60, ge=0, le=86400, validation_alias="OPSCENTER_HEALTH_INTERVAL"
    )
    # Seconds between scheduler rounds (due schedules, daily retention); 0 turns it off.
    scheduler_interval_seconds: float = Field(
        15, ge=0, le=3600, validation_alias="OPSCENTER_SCHEDULER_INTERVAL"
    )
    log_level: str = Field("INFO", validation_alias="OPSCENTER_LOG_LEVEL")
    secure_cookies: bool = Field(False, validation_alias="OPSCENTER_SECURE_COOKIES")

    @field_validator("allowed_origins", "outbound_allowlist", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
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
