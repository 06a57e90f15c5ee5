"""analytics: insight dismissals, custom reports and their versions, backups by time

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07 04:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_backups_created", "backups", ["created_at"], unique=False)
    op.create_table(
        "analytics_dismissals",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("dismissed_by", sa.Integer(), nullable=True),
        sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dismissed_by"],
            ["users.id"],
            name=op.f("fk_analytics_dismissals_dismissed_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_analytics_dismissals_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_dismissals")),
        sa.UniqueConstraint(
            "team_id", "fingerprint", name=op.f("uq_analytics_dismissals_team_id_fingerprint")
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_analytics_dismissals_team_id"), "analytics_dismissals", ["team_id"], unique=False
    )
    op.create_table(
        "analytics_reports",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("group_by", sa.String(length=16), nullable=False),
        sa.Column("window", sa.String(length=16), nullable=False),
        sa.Column("schedule", sa.String(length=200), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_analytics_reports_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_analytics_reports_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_reports")),
        sa.UniqueConstraint("team_id", "name", name=op.f("uq_analytics_reports_team_id_name")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_analytics_reports_next_run", "analytics_reports", ["next_run_at"], unique=False
    )
    op.create_index(
        op.f("ix_analytics_reports_team_id"), "analytics_reports", ["team_id"], unique=False
    )
    op.create_table(
        "analytics_report_results",
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("rows", sa.JSON(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("generated_by", sa.Integer(), nullable=True),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["generated_by"],
            ["users.id"],
            name=op.f("fk_analytics_report_results_generated_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["analytics_reports.id"],
            name=op.f("fk_analytics_report_results_report_id_analytics_reports"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_analytics_report_results_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_report_results")),
        sa.UniqueConstraint(
            "report_id", "version", name=op.f("uq_analytics_report_results_report_id_version")
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_analytics_report_results_report_id"),
        "analytics_report_results",
        ["report_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_analytics_report_results_report_id"), table_name="analytics_report_results"
    )
    op.drop_table("analytics_report_results")
    op.drop_index(op.f("ix_analytics_reports_team_id"), table_name="analytics_reports")
    op.drop_index("ix_analytics_reports_next_run", table_name="analytics_reports")
    op.drop_table("analytics_reports")
    op.drop_index(op.f("ix_analytics_dismissals_team_id"), table_name="analytics_dismissals")
    op.drop_table("analytics_dismissals")
    op.drop_index("ix_backups_created", table_name="backups")
