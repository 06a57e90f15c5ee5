"""security: ATT&CK technique ids on findings and incidents; fuzzing campaigns and crashes

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-07 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing rows carry no technique: an empty list, then the ORM fills new rows.
    for table in ("security_findings", "incidents"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column(
                    "attack_techniques", sa.JSON(), nullable=False, server_default=sa.text("'[]'")
                )
            )
        with op.batch_alter_table(table) as batch:
            batch.alter_column("attack_techniques", server_default=None)
    op.create_table(
        "fuzzing_campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("executions", sa.Integer(), nullable=False),
        sa.Column("execs_per_second", sa.Float(), nullable=True),
        sa.Column("coverage_edges", sa.Integer(), nullable=True),
        sa.Column("coverage_percent", sa.Float(), nullable=True),
        sa.Column("corpus_size", sa.Integer(), nullable=True),
        sa.Column("crashes_total", sa.Integer(), nullable=False),
        sa.Column("crashes_unique", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["security_assets.id"],
            name=op.f("fk_fuzzing_campaigns_asset_id_security_assets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_fuzzing_campaigns_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_fuzzing_campaigns_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fuzzing_campaigns")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_fuzzing_campaigns_team", "fuzzing_campaigns", ["team_id", "id"])
    op.create_index(
        op.f("ix_fuzzing_campaigns_asset_id"), "fuzzing_campaigns", ["asset_id"], unique=False
    )
    op.create_table(
        "fuzzing_crashes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("stack_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("access", sa.String(length=10), nullable=True),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("frames", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.Column("finding_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["fuzzing_campaigns.id"],
            name=op.f("fk_fuzzing_crashes_campaign_id_fuzzing_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["finding_id"],
            ["security_findings.id"],
            name=op.f("fk_fuzzing_crashes_finding_id_security_findings"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fuzzing_crashes")),
        sa.UniqueConstraint(
            "campaign_id", "stack_hash", name=op.f("uq_fuzzing_crashes_campaign_id_stack_hash")
        ),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("fuzzing_crashes")
    op.drop_index(op.f("ix_fuzzing_campaigns_asset_id"), table_name="fuzzing_campaigns")
    op.drop_index("ix_fuzzing_campaigns_team", table_name="fuzzing_campaigns")
    op.drop_table("fuzzing_campaigns")
    for table in ("incidents", "security_findings"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("attack_techniques")
