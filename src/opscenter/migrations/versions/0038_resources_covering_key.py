"""resources speed: on PostgreSQL the samples' key carries the values (a history read is
an index-only scan), and the table is vacuumed often enough to keep its pages all-visible

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-07 11:55:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0038"
down_revision: str | None = "0037"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "source, metric, resolution, at, label"
# Autovacuum's defaults wait for a fifth of the table to change; this table takes a
# round of inserts every 15 s and prunes every 5 minutes.
VACUUM_OFTEN = (
    "autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02, "
    "autovacuum_analyze_scale_factor = 0.02"
)


def _key(include: str) -> None:
    op.execute("ALTER TABLE resource_samples DROP CONSTRAINT pk_resource_samples")
    op.execute(
        f"ALTER TABLE resource_samples ADD CONSTRAINT pk_resource_samples "
        f"PRIMARY KEY ({KEY}){include}"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _key(" INCLUDE (value, min, max, count)")
        op.execute(f"ALTER TABLE resource_samples SET ({VACUUM_OFTEN})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE resource_samples RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor)"
        )
        _key("")
