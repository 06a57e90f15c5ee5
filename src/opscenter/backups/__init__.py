"""The streaming backup engine: sources, pipeline, manifest, restore and verification.

Pure library code (asyncio, no web framework, no ORM). See ARCHITECTURE.md,
"The backup pipeline", and RELIABILITY.md, "The integrity contract of a backup".
"""

from opscenter.backups.manifest import Manifest, read_manifest, scan_catalog
from opscenter.backups.pipeline import BackupOptions, BackupResult, run_backup
from opscenter.backups.restore import deep_verify, quick_verify, run_restore
from opscenter.backups.sources import (
    DirectorySource,
    MySQLConnection,
    MySQLSource,
    PgConnection,
    PostgresSource,
    SqliteSource,
)
from opscenter.backups.streams import Compression
from opscenter.core.failures import BackupError, ErrorCode
from opscenter.remote.runner import Command, CommandRunner, LocalRunner

__all__ = [
    "BackupError",
    "BackupOptions",
    "BackupResult",
    "Command",
    "CommandRunner",
    "Compression",
    "DirectorySource",
    "ErrorCode",
    "LocalRunner",
    "Manifest",
    "MySQLConnection",
    "MySQLSource",
    "PgConnection",
    "PostgresSource",
    "SqliteSource",
    "deep_verify",
    "quick_verify",
    "read_manifest",
    "run_backup",
    "run_restore",
    "scan_catalog",
]
