"""Resource monitoring: a time series of samples, threshold rules and their alerts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin


class ResourceSample(Base):
    """One point of one series at one resolution (0 = raw, 300, 3600 seconds).

    `at` is epoch seconds (the bucket's start for rollups), not a datetime column: bucketing
    is integer division on SQLite and PostgreSQL alike, and the index stays small. A rollup
    keeps min, max, the mean and how many raw points it stands for.
    """

    __tablename__ = "resource_samples"
    # The series' key is the primary key, and on SQLite the table is stored in its order
    # (WITHOUT ROWID): a 7-day read is one contiguous range, not 2000 scattered rows.
    # Samples are never referred to by id, so there is none (and no AUTOINCREMENT).
    # On PostgreSQL the key's index carries the values too: a history read is an index-only
    # scan of one range, not a heap page per point (rows of one series are spread over the
    # table in time order); its autovacuum settings keep the pages all-visible for that
    # (migration 0038).
    __table_args__ = (
        PrimaryKeyConstraint(
            "source",
            "metric",
            "resolution",
            "at",
            "label",
            postgresql_include=["value", "min", "max", "count"],
        ),
        Index("ix_resource_samples_resolution_at", "resolution", "at"),
        Index("ix_resource_samples_source_latest", "source", "resolution", "at"),
        {"sqlite_with_rowid": False},
    )

    #: "host" (this opscenter host), "server:<id>" or "storage:<id>".
    source: Mapped[str] = mapped_column(String(40))
    #: The owner of the source (None for this host: every reader may see it).
    team_id: Mapped[int | None] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(60))
    #: The instance within the source: a mount point, a database name, an interface.
    label: Mapped[str] = mapped_column(String(200), default="")
    resolution: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float] = mapped_column(Float)
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer, default=1)


class RollupMark(Base):
    """How far each resolution has been rolled up from the one below (epoch seconds)."""

    __tablename__ = "resource_rollups"

    resolution: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    done_until: Mapped[int] = mapped_column(BigInteger)


class AlertStatus(StrEnum):
    PENDING = "pending"  # the condition holds, its for-duration has not passed yet
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class ResourceAlertRule(IdMixin, TimestampMixin, Base):
    __tablename__ = "resource_alert_rules"
    __table_args__ = {"sqlite_autoincrement": True}

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(60))
    #: Only this instance (a mount, a database); "" = every instance of the metric.
    label: Mapped[str] = mapped_column(String(200), default="")
    #: ">", ">=", "<", "<=", or "full_within_days" (the forecast's days left <= value).
    operator: Mapped[str] = mapped_column(String(20))
    threshold: Mapped[float] = mapped_column(Float)
    for_seconds: Mapped[int] = mapped_column(Integer, default=0)
    severity: Mapped[str] = mapped_column(String(20), default="warning")
    #: Scope: one server, or None = every source of the team and this host.
    server_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="CASCADE"), index=True
    )
    open_incident: Mapped[bool] = mapped_column(default=False)
    is_enabled: Mapped[bool] = mapped_column(default=True)


class ResourceAlert(IdMixin, TimestampMixin, Base):
    __tablename__ = "resource_alerts"
    __table_args__ = (
        Index("ix_resource_alerts_open", "rule_id", "source", "label", "status"),
        {"sqlite_autoincrement": True},
    )

    rule_id: Mapped[int] = mapped_column(
        ForeignKey("resource_alert_rules.id", ondelete="CASCADE"), index=True
    )
    team_id: Mapped[int] = mapped_column(Integer, index=True)
    source: Mapped[str] = mapped_column(String(40))
    server_id: Mapped[int | None] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(60))
    label: Mapped[str] = mapped_column(String(200), default="")
    severity: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    value: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(String(500), default="")
    started_at: Mapped[datetime]
    fired_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    ack_note: Mapped[str | None] = mapped_column(String(2000))
    resolved_at: Mapped[datetime | None]
