"""external job reports

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "external_jobs",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("expected_interval_minutes", sa.Integer(), nullable=False),
        sa.Column("grace_minutes", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_report_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("overdue_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_external_jobs_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_external_jobs_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_external_jobs")),
        sa.UniqueConstraint(
            "team_id", "name", "host", name=op.f("uq_external_jobs_team_id_name_host")
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("external_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_external_jobs_team_id"), ["team_id"], unique=False)

    op.create_table(
        "external_job_reports",
        sa.Column("external_job_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("message", sa.String(length=4000), nullable=True),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_external_job_reports_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["external_job_id"],
            ["external_jobs.id"],
            name=op.f("fk_external_job_reports_external_job_id_external_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_external_job_reports")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("external_job_reports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_external_job_reports_job_created",
            ["external_job_id", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("external_job_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_external_job_reports_job_created")

    op.drop_table("external_job_reports")
    with op.batch_alter_table("external_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_external_jobs_team_id"))

    op.drop_table("external_jobs")
