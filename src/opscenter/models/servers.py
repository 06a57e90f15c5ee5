"""Servers: database servers and hosts that opscenter backs up."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin


class Server(IdMixin, TimestampMixin, Base):
    __tablename__ = "servers"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    type: Mapped[str] = mapped_column(String(20))
    environment: Mapped[str] = mapped_column(String(20), default="development")
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int | None]
    paths: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # AES-GCM ciphertext of the credentials JSON, bound to this row (Keyring.encrypt_secret).
    credentials_encrypted: Mapped[str | None] = mapped_column(Text)
    # Which credential fields are set, so responses can say `has_password` without decrypting.
    credential_fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    credential_username: Mapped[str | None] = mapped_column(String(200))
    db_engine: Mapped[str | None] = mapped_column(String(20))
    db_port: Mapped[int | None]
    # OpenSSH public key line, pinned on first connection; a different key fails closed.
    ssh_host_key: Mapped[str | None] = mapped_column(String(2000))
    #: docker: the container the tools run in.
    container: Mapped[str | None] = mapped_column(String(128))
    health_status: Mapped[str] = mapped_column(String(20), default="unknown")
    health_message: Mapped[str | None] = mapped_column(String(2000))
    last_heartbeat: Mapped[datetime | None]
