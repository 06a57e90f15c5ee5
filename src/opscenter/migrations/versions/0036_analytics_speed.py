"""analytics speed: restore tests of a period read off an index; audit chain checkpoints,
so a later verification walks only the entries after the last verified one

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-07 08:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0036"
down_revision: str | None = "0035"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Checkpoints vouch for the trail: append-only in the database itself, like the trail.
_PG_APPEND_ONLY = (
    """CREATE FUNCTION audit_checkpoints_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'audit_checkpoints is append-only';
    END;
    $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints "
    "FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only()",
)
_SQLITE_APPEND_ONLY = (
    "CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints "
    "BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END",
    "CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints "
    "BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END",
)


def upgrade() -> None:
    with op.batch_alter_table("verification_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_verification_runs_type_created", ["test_type", "created_at"], unique=False
        )
    op.create_table(
        "audit_checkpoints",
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("after_id", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
        sqlite_autoincrement=True,
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in _PG_APPEND_ONLY if postgres else _SQLITE_APPEND_ONLY:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("audit_checkpoints")  # and its triggers
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_checkpoints_append_only()")
    with op.batch_alter_table("verification_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_verification_runs_type_created")
