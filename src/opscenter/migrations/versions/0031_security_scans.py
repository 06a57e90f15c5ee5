"""security: policies (the built-in ones seeded here), scans, the surface allow-list

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-07 04:42:37.587146
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _refs(*pairs: str) -> list[dict[str, str]]:
    """ "soc2:CC6.1" -> {"framework": "soc2", "control": "CC6.1"}."""
    return [dict(zip(("framework", "control"), p.rsplit(":", 1), strict=True)) for p in pairs]


COMMON_PORTS = [21, 22, 23, 25, 80, 110, 143, 443, 445, 1433, 3306, 3389, 5432, 5900, 6379,
                8080, 8443, 9200, 11211, 27017]  # fmt: skip

# The built-in policies as they are at this revision (later changes come as migrations).
BUILTIN: list[dict[str, Any]] = [
    {
        "key": "posture.admin-password-age",
        "check": "admin_password_age",
        "title": "Admins change their password regularly",
        "description": "An active admin whose password was set longer ago than max_days.",
        "severity": "medium",
        "parameters": {"max_days": 90},
        "compliance": _refs("soc2:CC6.1", "iso27001:2022:A.5.17", "nist-csf-2.0:PR.AA-01"),
        "attack": ["T1078", "T1110"],
    },
    {
        "key": "posture.api-key-expiry",
        "check": "api_key_expiry",
        "title": "API keys expire",
        "description": "A usable API key without an expiry, or living longer than "
        "max_lifetime_days.",
        "severity": "medium",
        "parameters": {"max_lifetime_days": 365},
        "compliance": _refs(
            "soc2:CC6.1",
            "soc2:CC6.2",
            "iso27001:2022:A.5.17",
            "iso27001:2022:A.5.18",
            "nist-csf-2.0:PR.AA-05",
        ),
        "attack": ["T1528", "T1550.001"],
    },
    {
        "key": "posture.backup-encryption",
        "check": "backup_encryption",
        "title": "Backups are encrypted",
        "description": "A backup target that wrote an unencrypted backup within window_days.",
        "severity": "high",
        "parameters": {"window_days": 30},
        "compliance": _refs(
            "soc2:CC6.7",
            "iso27001:2022:A.8.24",
            "iso27001:2022:A.8.13",
            "nist-csf-2.0:PR.DS-11",
            "nist-csf-2.0:PR.DS-01",
        ),
        "attack": ["T1530", "T1005"],
    },
    {
        "key": "posture.backup-rpo",
        "check": "backup_rpo",
        "title": "Every scheduled database has a verified backup within its RPO",
        "description": "The RPO is the schedule's interval times rpo_intervals; only "
        "backups whose verification passed count.",
        "severity": "high",
        "parameters": {"rpo_intervals": 2.0},
        "compliance": _refs(
            "soc2:A1.2", "iso27001:2022:A.8.13", "nist-csf-2.0:PR.DS-11", "nist-csf-2.0:RC.RP-03"
        ),
        "attack": ["T1490", "T1485"],
    },
    {
        "key": "posture.escrow-key",
        "check": "escrow_key",
        "title": "An escrow key is configured",
        "description": "Without an offline escrow recipient, losing this server's key "
        "loses every encrypted backup.",
        "severity": "high",
        "parameters": {},
        "compliance": _refs(
            "soc2:A1.2", "iso27001:2022:A.8.24", "iso27001:2022:A.8.13", "nist-csf-2.0:PR.DS-11"
        ),
        "attack": ["T1486", "T1490"],
    },
    {
        "key": "posture.inactive-users",
        "check": "inactive_users",
        "title": "Inactive accounts are disabled",
        "description": "An enabled account with no login for days (never logged in: since "
        "it was made).",
        "severity": "low",
        "parameters": {"days": 90},
        "compliance": _refs(
            "soc2:CC6.2", "soc2:CC6.3", "iso27001:2022:A.5.18", "nist-csf-2.0:PR.AA-05"
        ),
        "attack": ["T1078"],
    },
    {
        "key": "posture.weak-settings",
        "check": "weak_settings",
        "title": "Security settings are not weakened",
        "description": "Rate limiting off, cookies without Secure, a wildcard web origin, "
        "long-lived access tokens, a short JWT secret.",
        "severity": "medium",
        "parameters": {"max_access_token_minutes": 60, "min_jwt_secret_length": 32},
        "compliance": _refs("soc2:CC6.1", "iso27001:2022:A.8.9", "nist-csf-2.0:PR.PS-01"),
        "attack": ["T1110", "T1539"],
    },
    {
        "key": "surface.tls-expiry",
        "check": "tls_expiry",
        "title": "TLS certificates are renewed in time",
        "description": "A certificate expiring within warn_days (policy severity), within "
        "critical_days (high), or expired (critical).",
        "severity": "medium",
        "parameters": {"warn_days": 30, "critical_days": 7},
        "compliance": _refs("soc2:CC6.7", "iso27001:2022:A.8.24", "nist-csf-2.0:PR.DS-02"),
        "attack": ["T1557"],
    },
    {
        "key": "surface.tls-protocol",
        "check": "tls_protocol",
        "title": "TLS 1.2 or later",
        "description": "A port that negotiates a protocol older than min_version.",
        "severity": "high",
        "parameters": {"min_version": "TLSv1.2"},
        "compliance": _refs("soc2:CC6.7", "iso27001:2022:A.8.24", "nist-csf-2.0:PR.DS-02"),
        "attack": ["T1557", "T1040"],
    },
    {
        "key": "surface.tls-chain",
        "check": "tls_chain",
        "title": "TLS certificate chains verify",
        "description": "A certificate whose chain does not verify against the system's "
        "trust store (self-signed ones are their own policy).",
        "severity": "high",
        "parameters": {},
        "compliance": _refs("soc2:CC6.7", "iso27001:2022:A.8.24", "nist-csf-2.0:PR.DS-02"),
        "attack": ["T1557"],
    },
    {
        "key": "surface.tls-self-signed",
        "check": "tls_self_signed",
        "title": "No self-signed TLS certificates",
        "description": "A self-signed certificate cannot be told apart from an attacker's.",
        "severity": "medium",
        "parameters": {},
        "compliance": _refs("soc2:CC6.7", "iso27001:2022:A.8.24", "nist-csf-2.0:PR.DS-02"),
        "attack": ["T1557"],
    },
    {
        "key": "surface.open-ports",
        "check": "open_ports",
        "title": "Only declared ports are open",
        "description": "An open port from the list that the asset does not declare.",
        "severity": "medium",
        "parameters": {"ports": COMMON_PORTS, "timeout_seconds": 0.5},
        "compliance": _refs("soc2:CC6.6", "iso27001:2022:A.8.20", "nist-csf-2.0:PR.IR-01"),
        "attack": ["T1046", "T1190"],
    },
]


def upgrade() -> None:
    op.create_table(
        "security_policies",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("check", sa.String(length=40), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("compliance", sa.JSON(), nullable=False),
        sa.Column("attack", sa.JSON(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_policies")),
        sa.UniqueConstraint("key", name=op.f("uq_security_policies_key")),
        sqlite_autoincrement=True,
    )
    policies = sa.table(
        "security_policies",
        *(sa.column(c) for c in ("key", "check", "title", "description", "severity")),
        sa.column("enabled", sa.Boolean()),
        sa.column("builtin", sa.Boolean()),
        sa.column("parameters", sa.JSON()),
        sa.column("compliance", sa.JSON()),
        sa.column("attack", sa.JSON()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        policies,
        [
            {**p, "enabled": True, "builtin": True, "created_at": now, "updated_at": now}
            for p in BUILTIN
        ],
    )
    op.create_table(
        "security_surface_allow",
        sa.Column("entry", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_security_surface_allow_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_surface_allow")),
        sa.UniqueConstraint("entry", name=op.f("uq_security_surface_allow_entry")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "security_scans",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("asset_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("checks_run", sa.Integer(), nullable=False),
        sa.Column("targets_probed", sa.Integer(), nullable=False),
        sa.Column("targets_skipped", sa.JSON(), nullable=False),
        sa.Column("reported", sa.Integer(), nullable=False),
        sa.Column("new", sa.Integer(), nullable=False),
        sa.Column("reopened", sa.Integer(), nullable=False),
        sa.Column("closed", sa.Integer(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_security_scans_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_security_scans_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_security_scans_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_scans")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("security_scans", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_security_scans_team_id"), ["team_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("security_scans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_scans_team_id"))

    op.drop_table("security_scans")
    op.drop_table("security_surface_allow")
    op.drop_table("security_policies")
