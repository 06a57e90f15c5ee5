"""Integrations (outgoing webhooks, chat, Jira, CI/CD) and their delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin


class Integration(IdMixin, TimestampMixin, Base):
    __tablename__ = "integrations"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(20))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # nothing secret
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    secret_fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Standard Webhooks signing secret (`whsec_...`), for the `webhook` type.
    signing_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    # What the provider remembers between deliveries (Jira: alert key -> issue key).
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    is_active: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    last_success_at: Mapped[datetime | None] = mapped_column()
    last_failure_at: Mapped[datetime | None] = mapped_column()
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class WebhookDelivery(IdMixin, TimestampMixin, Base):
    """One event for one integration; `attempts_log` keeps every try (never a secret)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)

    integration_id: Mapped[int] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    # `webhook-id`: a redelivery keeps it, so receivers can drop duplicates.
    message_id: Mapped[str] = mapped_column(String(64), index=True)
    team_id: Mapped[int | None] = mapped_column(index=True)  # the event's team, for scoping
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending -> sending -> succeeded | failed (retries exhausted or integration disabled)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_latency_ms: Mapped[int | None] = mapped_column()
    delivered_at: Mapped[datetime | None] = mapped_column()
    attempts_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    redelivery_of: Mapped[int | None] = mapped_column()
