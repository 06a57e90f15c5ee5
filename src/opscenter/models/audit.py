"""The append-only, hash-chained audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin


class AuditLog(IdMixin, Base):
    __tablename__ = "audit_logs"

    created_at: Mapped[datetime] = mapped_column(index=True)
    user_id: Mapped[int | None] = mapped_column(index=True)  # no FK: the trail outlives users
    username: Mapped[str | None] = mapped_column(String(64))
    # The team of what the entry is about (none for users, logins, ...): who may read it.
    team_id: Mapped[int | None] = mapped_column(index=True)  # no FK, like user_id
    api_key_id: Mapped[int | None]
    action: Mapped[str] = mapped_column(String(100), index=True)
    resource_type: Mapped[str | None] = mapped_column(String(64), index=True)
    resource_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    request_id: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditCheckpoint(IdMixin, Base):
    """A verified stretch of the audit chain: at `verified_at`, the entries after
    `after_id` up to `last_id` held their hashes and links, entry `last_id` carrying
    `last_hash`. `after_id` 0 is a walk from the first entry; any other continues the
    checkpoint that ended at that entry. Appended only."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = ({"sqlite_autoincrement": True},)

    verified_at: Mapped[datetime]
    after_id: Mapped[int]
    last_id: Mapped[int]
    last_hash: Mapped[str] = mapped_column(String(64))
