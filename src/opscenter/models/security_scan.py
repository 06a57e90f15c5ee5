"""Security policies (posture and surface checks with their compliance references), the
scans that run them, and the addresses an admin allows the surface scan to probe."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin


class ScanScope(StrEnum):
    POSTURE = "posture"
    SURFACE = "surface"
    BOTH = "both"


class ScanStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class SecurityPolicy(IdMixin, TimestampMixin, Base):
    """One check with its parameters; built-in ones come with the migration, custom ones
    are made from the same check types (never code)."""

    __tablename__ = "security_policies"
    __table_args__ = ({"sqlite_autoincrement": True},)

    key: Mapped[str] = mapped_column(String(64), unique=True)
    check: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    severity: Mapped[str] = mapped_column(String(10))
    enabled: Mapped[bool] = mapped_column(default=True)
    builtin: Mapped[bool] = mapped_column(default=False)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{"framework": "soc2" | "iso27001:2022" | "nist-csf-2.0", "control": "CC6.1"}, ...]
    compliance: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    attack: Mapped[list[str]] = mapped_column(JSON, default=list)


class SecurityScan(IdMixin, Base):
    """One run of the enabled policies, with what it changed and what it found."""

    __tablename__ = "security_scans"
    __table_args__ = ({"sqlite_autoincrement": True},)

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    scope: Mapped[str] = mapped_column(String(10))
    asset_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default=ScanStatus.QUEUED)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    checks_run: Mapped[int] = mapped_column(default=0)
    targets_probed: Mapped[int] = mapped_column(default=0)
    targets_skipped: Mapped[list[str]] = mapped_column(JSON, default=list)
    reported: Mapped[int] = mapped_column(default=0)
    new: Mapped[int] = mapped_column(default=0)
    reopened: Mapped[int] = mapped_column(default=0)
    closed: Mapped[int] = mapped_column(default=0)
    # [{"policy": key, "asset_id", "finding_id", "title", "severity"}]: what failed.
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class SurfaceAllow(IdMixin, Base):
    """One address range (CIDR) or host name the surface scan may probe; none: nothing."""

    __tablename__ = "security_surface_allow"
    __table_args__ = ({"sqlite_autoincrement": True},)

    entry: Mapped[str] = mapped_column(String(255), unique=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
