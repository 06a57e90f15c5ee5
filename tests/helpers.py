"""Helpers shared by tests of several packages."""

from __future__ import annotations

import subprocess


def psql(sql: str, db: str = "postgres") -> str:
    """Run `sql` on the loopback PostgreSQL as postgres; its unaligned output."""
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qAtX", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
