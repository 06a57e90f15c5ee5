"""verification runs

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "verification_runs",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("backup_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("test_type", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("target_server_id", sa.Integer(), nullable=True),
        sa.Column("scratch_database", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("rto_seconds", sa.Float(), nullable=True),
        sa.Column("table_comparison", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["backup_id"],
            ["backups.id"],
            name=op.f("fk_verification_runs_backup_id_backups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_verification_runs_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"],
            ["users.id"],
            name=op.f("fk_verification_runs_requested_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["target_server_id"],
            ["servers.id"],
            name=op.f("fk_verification_runs_target_server_id_servers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_verification_runs_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verification_runs")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("verification_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_verification_runs_backup_created", ["backup_id", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_verification_runs_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_verification_runs_team_id"), ["team_id"], unique=False)

    # Automatic verification asked for by a schedule.
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("verify_after", sa.String(length=16), nullable=False, server_default="none")
        )
        batch_op.add_column(sa.Column("restore_test_every_days", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("last_restore_test_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_column("last_restore_test_at")
        batch_op.drop_column("restore_test_every_days")
        batch_op.drop_column("verify_after")

    with op.batch_alter_table("verification_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_verification_runs_team_id"))
        batch_op.drop_index(batch_op.f("ix_verification_runs_status"))
        batch_op.drop_index("ix_verification_runs_backup_created")

    op.drop_table("verification_runs")
