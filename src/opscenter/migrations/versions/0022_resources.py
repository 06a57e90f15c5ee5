"""resources: time series samples with rollups, alert rules and alerts

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Stored in key order on SQLite (WITHOUT ROWID): a series' range is contiguous.
    op.create_table(
        "resource_samples",
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.Column("metric", sa.String(length=60), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "source", "metric", "resolution", "at", "label", name=op.f("pk_resource_samples")
        ),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_resource_samples_resolution_at", "resource_samples", ["resolution", "at"])
    op.create_index(
        "ix_resource_samples_source_latest", "resource_samples", ["source", "resolution", "at"]
    )
    op.create_table(
        "resource_rollups",
        sa.Column("resolution", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("done_until", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resolution", name=op.f("pk_resource_rollups")),
    )
    op.create_table(
        "resource_alert_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=60), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("operator", sa.String(length=20), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("for_seconds", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(length=20), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=True),
        sa.Column("open_incident", sa.Boolean(), nullable=False),
        sa.Column("is_enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_resource_alert_rules_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_resource_alert_rules_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_alert_rules")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_resource_alert_rules_server_id"), "resource_alert_rules", ["server_id"]
    )
    op.create_index(op.f("ix_resource_alert_rules_team_id"), "resource_alert_rules", ["team_id"])
    op.create_table(
        "resource_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=True),
        sa.Column("metric", sa.String(length=60), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("severity", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.Column("ack_note", sa.String(length=2000), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["resource_alert_rules.id"],
            name=op.f("fk_resource_alerts_rule_id_resource_alert_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_alerts")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_resource_alerts_open", "resource_alerts", ["rule_id", "source", "label", "status"]
    )
    op.create_index(op.f("ix_resource_alerts_rule_id"), "resource_alerts", ["rule_id"])
    op.create_index(op.f("ix_resource_alerts_status"), "resource_alerts", ["status"])
    op.create_index(op.f("ix_resource_alerts_team_id"), "resource_alerts", ["team_id"])


def downgrade() -> None:
    op.drop_table("resource_alerts")
    op.drop_table("resource_alert_rules")
    op.drop_table("resource_rollups")
    op.drop_table("resource_samples")
