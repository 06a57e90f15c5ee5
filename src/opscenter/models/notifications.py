"""Notifications: outgoing channels (Slack, email, ...), alert policies routing events to
them and to people, the per-user in-app notification center and its preferences."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.core.clock import utcnow
from opscenter.models.base import Base, IdMixin, TimestampMixin


class NotificationChannel(IdMixin, TimestampMixin, Base):
    __tablename__ = "notification_channels"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(20))
    is_enabled: Mapped[bool] = mapped_column(default=True)
    # The non-secret part of the configuration (chat id, SMTP host, recipients, ...).
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # AES-GCM ciphertext of the secret fields (webhook URLs, tokens, passwords), bound to the row.
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    secret_fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Where it sends to (a host name only), so a list can show it without decrypting.
    target_host: Mapped[str] = mapped_column(String(255), default="")
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(2000))
    last_error_at: Mapped[datetime | None]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class AlertPolicy(IdMixin, TimestampMixin, Base):
    """Which events (type patterns, minimum severity, environment, server, schedule) go to
    which channels and to which users or teams in-app, at most once per throttle window."""

    __tablename__ = "alert_policies"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    is_enabled: Mapped[bool] = mapped_column(default=True)
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    min_severity: Mapped[str] = mapped_column(String(16), default="info")
    environments: Mapped[list[str]] = mapped_column(JSON, default=list)
    server_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    schedule_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    channel_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    user_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    team_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    throttle_seconds: Mapped[int] = mapped_column(default=300)
    # The `open_incident` action: {"severity", "environment", "squad"} of the incident a
    # matching event opens (the incidents domain acts on it); None: no incident.
    open_incident: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class Notification(IdMixin, Base):
    """One in-app notification of one user."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_created", "user_id", "created_at"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(String(2000))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    policy_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_policies.id", ondelete="SET NULL")
    )
    read_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationPreference(IdMixin, TimestampMixin, Base):
    """A user's choice for one event-type pattern on one delivery channel."""

    __tablename__ = "notification_preferences"
    __table_args__ = (UniqueConstraint("user_id", "event_type", "channel"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(default=True)
    min_level: Mapped[str] = mapped_column(String(16), default="info")
