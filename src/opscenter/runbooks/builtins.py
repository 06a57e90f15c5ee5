"""Runbooks that ship with opscenter, added to a team on request (`POST /sops/builtins/{key}`)
and then the team's own to change."""

from __future__ import annotations

from typing import Any

BUILTINS: dict[str, dict[str, Any]] = {
    "verify-latest-backups": {
        "name": "Verify the latest backups of a server",
        "description": "A deep check (decrypt, decompress, read to the end) of the newest "
        "completed backup of each database of the chosen servers, then a person reviews.",
        "steps": [
            {"name": "Deep-check the newest backups", "type": "verify", "test_type": "deep"},
            {"name": "Review the results and file what failed", "type": "manual"},
        ],
    },
    "staging-restore": {
        "name": "Restore last night's production backup into staging, masked",
        "description": "After an approval, the newest completed backup of a production "
        "database is restored into a staging database (replacing it), with sensitive columns "
        "masked in the target; then a person checks staging.",
        "steps": [
            {"name": "Approve the refresh of staging", "type": "approval"},
            {
                "name": "Restore the newest backup into staging, masked",
                "type": "restore",
                "drop_existing": True,
            },
            {"name": "Check staging and tell its users", "type": "manual"},
        ],
    },
    "rotate-db-password": {
        "name": "Rotate a database user's password",
        "description": "A new random password (32 letters and digits) for the database login "
        "opscenter uses on each chosen server: set on the database (a SCRAM verifier on "
        "PostgreSQL), proven by a fresh login, then stored encrypted in the server's "
        "credentials; then a person updates the other clients of that login.",
        "steps": [
            {"name": "Rotate the password and store it", "type": "rotate_password"},
            {"name": "Update the other clients of this login", "type": "manual"},
        ],
    },
}
