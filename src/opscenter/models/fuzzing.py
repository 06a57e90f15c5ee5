"""Fuzzing campaigns imported from libFuzzer and AFL++ output, and their crashes
deduplicated by stack hash (security domain)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin


class FuzzEngine(StrEnum):
    LIBFUZZER = "libfuzzer"
    AFLPLUSPLUS = "aflplusplus"


class FuzzingCampaign(IdMixin, Base):
    """One fuzzing run of one target of an asset, with its figures as the engine wrote
    them (summed over the run's workers)."""

    __tablename__ = "fuzzing_campaigns"
    __table_args__ = (
        Index("ix_fuzzing_campaigns_team", "team_id", "id"),
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    asset_id: Mapped[int] = mapped_column(
        ForeignKey("security_assets.id", ondelete="CASCADE"), index=True
    )
    target: Mapped[str] = mapped_column(String(200))
    engine: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime | None]
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    executions: Mapped[int]
    execs_per_second: Mapped[float | None] = mapped_column(Float)
    coverage_edges: Mapped[int | None]
    coverage_percent: Mapped[float | None] = mapped_column(Float)
    corpus_size: Mapped[int | None]
    crashes_total: Mapped[int]
    crashes_unique: Mapped[int]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]


class FuzzingCrash(IdMixin, Base):
    """One distinct crash of a campaign: same stack hash, one row, however often hit."""

    __tablename__ = "fuzzing_crashes"
    __table_args__ = (
        UniqueConstraint("campaign_id", "stack_hash"),
        {"sqlite_autoincrement": True},
    )

    campaign_id: Mapped[int] = mapped_column(ForeignKey("fuzzing_campaigns.id", ondelete="CASCADE"))
    stack_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(100))
    access: Mapped[str | None] = mapped_column(String(10))
    severity: Mapped[str] = mapped_column(String(10))
    frames: Mapped[list[str]] = mapped_column(JSON)
    summary: Mapped[str] = mapped_column(Text)
    count: Mapped[int]
    artifacts: Mapped[list[str]] = mapped_column(JSON)
    finding_id: Mapped[int | None] = mapped_column(
        ForeignKey("security_findings.id", ondelete="SET NULL")
    )
