"""Security: assets, the findings scanners reported on them, and the imports that brought
them. One store behind seed 002's `/security` and seed 004's `/secops` views."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin


class FindingStatus(StrEnum):
    OPEN = "open"
    FIXED = "fixed"  # no longer reported by the scanner that found it
    RISK_ACCEPTED = "risk_accepted"


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


class SecurityAsset(IdMixin, TimestampMixin, Base):
    """A thing findings are about. An asset linked to a server (`server_id`) takes its
    name, address, environment and team from the server and goes when the server goes."""

    __tablename__ = "security_assets"
    __table_args__ = (UniqueConstraint("team_id", "name"), {"sqlite_autoincrement": True})

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    environment: Mapped[str] = mapped_column(String(20), default="production")
    criticality: Mapped[str] = mapped_column(String(10), default="medium")
    address: Mapped[str] = mapped_column(String(255), default="")
    ports: Mapped[list[int]] = mapped_column(JSON, default=list)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    description: Mapped[str] = mapped_column(String(2000), default="")
    server_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="CASCADE"), unique=True
    )


class SecurityImport(IdMixin, Base):
    """One scanner report imported for one asset, with what it changed."""

    __tablename__ = "security_imports"
    __table_args__ = ({"sqlite_autoincrement": True},)

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    asset_id: Mapped[int] = mapped_column(
        ForeignKey("security_assets.id", ondelete="CASCADE"), index=True
    )
    scanner: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int]
    reported: Mapped[int]
    new: Mapped[int]
    reopened: Mapped[int]
    closed: Mapped[int]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]


class Finding(IdMixin, Base):
    """One vulnerability or rule violation on one asset, deduplicated by `fingerprint`:
    sha256 of asset, scanner, identifier, component, version and location."""

    __tablename__ = "security_findings"
    __table_args__ = (
        UniqueConstraint("fingerprint"),
        Index("ix_security_findings_scope", "asset_id", "scanner", "status"),
        Index("ix_security_findings_team_status", "team_id", "status", "severity"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    asset_id: Mapped[int] = mapped_column(ForeignKey("security_assets.id", ondelete="CASCADE"))
    scanner: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(64))
    identifier: Mapped[str] = mapped_column(String(200))
    cwe: Mapped[str | None] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(500))
    severity: Mapped[str] = mapped_column(String(10))
    cvss_vector: Mapped[str | None] = mapped_column(String(200))
    cvss_score: Mapped[float | None] = mapped_column(Float)
    component: Mapped[str] = mapped_column(String(300), default="")
    version: Mapped[str] = mapped_column(String(100), default="")
    fixed_version: Mapped[str] = mapped_column(String(200), default="")
    location: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[str] = mapped_column(String(16), default=FindingStatus.OPEN)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    fixed_at: Mapped[datetime | None]
    # When it must be fixed by: first seen + the severity's SLA, moved on by the time
    # spent under an accepted risk (the clock stops while the risk is accepted).
    due_at: Mapped[datetime]
    overdue_notified_at: Mapped[datetime | None]
    # Risk acceptance: asked for by one person, approved by another, until a date.
    acceptance_reason: Mapped[str | None] = mapped_column(Text)
    acceptance_requested_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    acceptance_approved_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    acceptance_expires_at: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    # ATT&CK technique ids the finding maps to (a SARIF rule's `attack.t1059` tags).
    attack_techniques: Mapped[list[str]] = mapped_column(JSON, default=list)
