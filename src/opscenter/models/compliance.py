"""Compliance: evidence people upload for controls (with the period it is effective for,
apart from when it was uploaded), and the immutable snapshots of framework assessments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.core.clock import utcnow
from opscenter.models.base import Base, IdMixin


class ComplianceEvidence(IdMixin, Base):
    """A document link or a statement standing for one or more controls. `team_id` None:
    installation-wide evidence (a company policy), counted in every team's assessment."""

    __tablename__ = "compliance_evidence"
    __table_args__ = (
        Index("ix_compliance_evidence_team", "team_id", "id"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str | None] = mapped_column(String(2000))
    control_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    effective_from: Mapped[datetime]
    effective_to: Mapped[datetime]
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    uploaded_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ComplianceReport(IdMixin, Base):
    """An assessment as it was when generated: never recomputed, never edited. `team_id`
    None: generated over every team (by someone who sees them all)."""

    __tablename__ = "compliance_reports"
    __table_args__ = (
        Index("ix_compliance_reports_team", "team_id", "id"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    framework: Mapped[str] = mapped_column(String(32))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    generated_at: Mapped[datetime] = mapped_column(default=utcnow)
    generated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    generated_by: Mapped[str] = mapped_column(String(200))
    summary: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
