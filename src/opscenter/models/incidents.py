"""Incidents (seed 004's infra module): the incident, its participants, its timeline of
every change, its evidence with a custody log, and the tasks whose hours make the SLA."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.core.clock import utcnow
from opscenter.models.base import Base, IdMixin, TimestampMixin


class IncidentStatus(StrEnum):
    OPEN = "open"
    INVESTIGATING = "investigating"
    MITIGATED = "mitigated"
    RESOLVED = "resolved"
    CLOSED = "closed"


class TaskStatus(StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class Incident(IdMixin, TimestampMixin, Base):
    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_team_created", "team_id", "created_at"),
        Index("ix_incidents_created", "created_at"),
        Index("ix_incidents_status_created", "status", "created_at"),
        # The list's filters in one narrow index: its total is counted from the index alone.
        Index("ix_incidents_filters", "team_id", "environment", "severity", "status", "squad"),
        # An open incident per alert: a repeat of the same alert finds it here.
        Index("ix_incidents_alert_key", "team_id", "alert_key"),
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    jira_id: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=IncidentStatus.OPEN.value)
    environment: Mapped[str] = mapped_column(String(16))
    squad: Mapped[str] = mapped_column(String(64))
    affected_services: Mapped[list[str]] = mapped_column(JSON, default=list)
    # ATT&CK technique ids seen in the incident, checked against the catalogue.
    attack_techniques: Mapped[list[str]] = mapped_column(JSON, default=list)
    commander_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # What raised it (`backup`, `verification`, `external_job`, ...) and its id.
    source_type: Mapped[str | None] = mapped_column(String(32))
    source_id: Mapped[int | None]
    alert_key: Mapped[str | None] = mapped_column(String(100))
    alert_count: Mapped[int] = mapped_column(default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    acknowledged_at: Mapped[datetime | None]
    mitigated_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]


class IncidentParticipant(IdMixin, Base):
    __tablename__ = "incident_participants"
    __table_args__ = (UniqueConstraint("incident_id", "user_id"),)

    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class IncidentEvent(IdMixin, Base):
    """One line of an incident's timeline: who changed what, when, from what to what.
    The actor's name is copied so the history reads the same after the user is gone."""

    __tablename__ = "incident_events"
    __table_args__ = (Index("ix_incident_events_incident", "incident_id", "id"),)

    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    field: Mapped[str | None] = mapped_column(String(64))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)


class Evidence(IdMixin, Base):
    """Immutable once written: a correction is a new item naming the one it supersedes."""

    __tablename__ = "incident_evidence"
    __table_args__ = (Index("ix_incident_evidence_incident", "incident_id", "id"),)

    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="RESTRICT"))
    title: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(32))
    content: Mapped[str | None] = mapped_column(Text)
    storage_id: Mapped[int | None] = mapped_column(
        ForeignKey("storage_providers.id", ondelete="RESTRICT")
    )
    storage_key: Mapped[str | None] = mapped_column(String(1024))
    file_name: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100))
    supersedes_id: Mapped[int | None] = mapped_column(
        ForeignKey("incident_evidence.id", ondelete="RESTRICT")
    )
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    uploaded_by: Mapped[str] = mapped_column(String(200))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvidenceAccess(IdMixin, Base):
    """The chain of custody: every upload, view and download of one evidence item."""

    __tablename__ = "evidence_custody"
    __table_args__ = (Index("ix_evidence_custody_evidence", "evidence_id", "id"),)

    evidence_id: Mapped[int] = mapped_column(
        ForeignKey("incident_evidence.id", ondelete="RESTRICT")
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    username: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(String(500))


class Task(IdMixin, TimestampMixin, Base):
    __tablename__ = "incident_tasks"
    __table_args__ = (
        Index("ix_incident_tasks_team_created", "team_id", "created_at"),
        Index("ix_incident_tasks_incident", "incident_id"),
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    squad: Mapped[str] = mapped_column(String(64))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.TODO.value)
    estimated_hours: Mapped[float | None] = mapped_column(Float)
    actual_hours: Mapped[float | None] = mapped_column(Float)
    due_date: Mapped[date | None] = mapped_column(Date)
    completed_at: Mapped[datetime | None]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
