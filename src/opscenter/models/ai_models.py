"""AI model registry: a team's models (providers and prices), versioned prompt templates
with movable labels, its fallback chains and budget, and every call made through it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.core.clock import utcnow
from opscenter.models.base import Base, IdMixin, TimestampMixin


class AiModel(IdMixin, TimestampMixin, Base):
    __tablename__ = "ai_models"
    __table_args__ = (UniqueConstraint("team_id", "name"), {"sqlite_autoincrement": True})

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(20))  # openai | anthropic | local
    model: Mapped[str] = mapped_column(String(200))  # the provider's model name
    endpoint: Mapped[str] = mapped_column(String(2000))
    # AES-GCM ciphertext bound to the row; never returned.
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    price_per_input_token: Mapped[float] = mapped_column(Float, default=0.0)
    price_per_output_token: Mapped[float] = mapped_column(Float, default=0.0)
    is_enabled: Mapped[bool] = mapped_column(default=True)
    # Skipped by the fallback chain until then, after it failed (LiteLLM's cooldown).
    cooldown_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class AiPrompt(IdMixin, Base):
    """One immutable version of a named prompt; labels (production, staging) move between
    the versions of a name, each label on at most one of them."""

    __tablename__ = "ai_prompts"
    __table_args__ = (
        UniqueConstraint("team_id", "name", "version"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    system: Mapped[str] = mapped_column(Text, default="")
    template: Mapped[str] = mapped_column(Text)
    variables: Mapped[list[str]] = mapped_column(JSON, default=list)
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AiFallbackConfig(IdMixin, TimestampMixin, Base):
    """A team's ordered model chain per purpose (retries, backoff, cooldown) and budget."""

    __tablename__ = "ai_fallback_configs"
    __table_args__ = ({"sqlite_autoincrement": True},)

    team_id: Mapped[int] = mapped_column(
        ForeignKey("teams.id", ondelete="RESTRICT"), unique=True, index=True
    )
    chains: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    budget_usd: Mapped[float | None] = mapped_column(Float)
    budget_period: Mapped[str] = mapped_column(String(10), default="month")


class AiCall(IdMixin, Base):
    """One attempt of one request made through the registry, measured. The attempts of a
    request share `request_id`; the one that ended it has `final` set."""

    __tablename__ = "ai_calls"
    __table_args__ = (
        Index("ix_ai_calls_model_created", "model_id", "created_at"),
        Index("ix_ai_calls_team_created", "team_id", "created_at"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    request_id: Mapped[str] = mapped_column(String(32), index=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("ai_models.id", ondelete="SET NULL"))
    model_name: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(default=1)
    # success | timeout | rate_limited | server_error | client_error | auth_failed |
    # unreachable | refused | bad_response
    outcome: Mapped[str] = mapped_column(String(20))
    status_code: Mapped[int | None]
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    tokens_in: Mapped[int] = mapped_column(default=0)
    tokens_out: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    final: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
