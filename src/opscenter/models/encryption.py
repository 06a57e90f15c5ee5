"""Offline escrow recipients: public age keys every new encrypted backup is also
encrypted to, so losing this server and its key never loses the backups."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin


class EscrowRecipient(IdMixin, TimestampMixin, Base):
    __tablename__ = "escrow_recipients"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    recipient: Mapped[str] = mapped_column(String(100), unique=True)  # age1...
    key_id: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str | None] = mapped_column(String(100))
