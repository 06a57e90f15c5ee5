"""finops: cost imports and lines (FOCUS columns), daily roll-ups, storage prices,
credits, budgets and recommendations

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 22:38:12.386180
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("anomaly_percent", sa.Integer(), nullable=False),
        sa.Column("alerted_month", sa.String(length=7), nullable=True),
        sa.Column("alerted_threshold", sa.Integer(), nullable=True),
        sa.Column("anomaly_day", sa.Date(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_budgets_team_id_teams"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
        sa.UniqueConstraint("team_id", "name", name=op.f("uq_budgets_team_id_name")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_budgets_team_id"), "budgets", ["team_id"], unique=False)
    op.create_table(
        "cost_credits",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_cost_credits_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_credits")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_cost_credits_team_id"), "cost_credits", ["team_id"], unique=False)
    op.create_table(
        "cost_recommendations",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=40), nullable=False),
        sa.Column("subject_type", sa.String(length=40), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=True),
        sa.Column("subject_key", sa.String(length=300), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("link", sa.String(length=300), nullable=False),
        sa.Column("monthly_saving", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_changed_by", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["status_changed_by"],
            ["users.id"],
            name=op.f("fk_cost_recommendations_status_changed_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_cost_recommendations_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_recommendations")),
        sa.UniqueConstraint(
            "team_id",
            "rule",
            "subject_key",
            name=op.f("uq_cost_recommendations_team_id_rule_subject_key"),
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_cost_recommendations_team_id"), "cost_recommendations", ["team_id"], unique=False
    )
    op.create_table(
        "storage_prices",
        sa.Column("storage_id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("price_per_gb_month", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["storage_id"],
            ["storage_providers.id"],
            name=op.f("fk_storage_prices_storage_id_storage_providers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_storage_prices_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_prices")),
        sa.UniqueConstraint("storage_id", name=op.f("uq_storage_prices_storage_id")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_storage_prices_team_id"), "storage_prices", ["team_id"], unique=False)
    op.create_table(
        "cost_imports",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("rows_imported", sa.Integer(), nullable=False),
        sa.Column("rows_rejected", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_cost_imports_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_cost_imports_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_cost_imports_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_imports")),
        sa.UniqueConstraint("team_id", "sha256", name=op.f("uq_cost_imports_team_id_sha256")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_cost_imports_team_id"), "cost_imports", ["team_id"], unique=False)
    op.create_table(
        "cost_lines",
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("billing_period_start", sa.Date(), nullable=False),
        sa.Column("charge_period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("charge_period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("charge_day", sa.Date(), nullable=False),
        sa.Column("charge_category", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=200), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=False),
        sa.Column("resource_id", sa.String(length=1024), nullable=True),
        sa.Column("resource_name", sa.String(length=1024), nullable=True),
        sa.Column("region", sa.String(length=100), nullable=True),
        sa.Column("environment", sa.String(length=100), nullable=True),
        sa.Column("billed_cost", sa.BigInteger(), nullable=False),
        sa.Column("effective_cost", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_lines")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_cost_lines_import_day", "cost_lines", ["import_id", "charge_day"], unique=False
    )
    op.create_table(
        "cost_rollups",
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("dimension", sa.String(length=140), nullable=False),
        sa.Column("value", sa.String(length=1024), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("billed_cost", sa.BigInteger(), nullable=False),
        sa.Column("effective_cost", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["cost_imports.id"],
            name=op.f("fk_cost_rollups_import_id_cost_imports"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_cost_rollups_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_rollups")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_cost_rollups_dim_day", "cost_rollups", ["dimension", "day", "team_id"], unique=False
    )
    op.create_index(op.f("ix_cost_rollups_import_id"), "cost_rollups", ["import_id"], unique=False)
    op.create_index(op.f("ix_cost_rollups_team_id"), "cost_rollups", ["team_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_cost_rollups_team_id"), table_name="cost_rollups")
    op.drop_index(op.f("ix_cost_rollups_import_id"), table_name="cost_rollups")
    op.drop_index("ix_cost_rollups_dim_day", table_name="cost_rollups")
    op.drop_table("cost_rollups")
    op.drop_index("ix_cost_lines_import_day", table_name="cost_lines")
    op.drop_table("cost_lines")
    op.drop_index(op.f("ix_cost_imports_team_id"), table_name="cost_imports")
    op.drop_table("cost_imports")
    op.drop_index(op.f("ix_storage_prices_team_id"), table_name="storage_prices")
    op.drop_table("storage_prices")
    op.drop_index(op.f("ix_cost_recommendations_team_id"), table_name="cost_recommendations")
    op.drop_table("cost_recommendations")
    op.drop_index(op.f("ix_cost_credits_team_id"), table_name="cost_credits")
    op.drop_table("cost_credits")
    op.drop_index(op.f("ix_budgets_team_id"), table_name="budgets")
    op.drop_table("budgets")
