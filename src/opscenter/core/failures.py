"""Classified errors of the backup engine.

Every failure of a backup, restore or verification is a :class:`BackupError` with a
stable :class:`ErrorCode`, a human message already scrubbed of secrets, the stage
that failed, and whether a retry may help (RELIABILITY.md, point 7).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

__all__ = ["PERMANENT", "BackupError", "ErrorCode", "scrub"]


class ErrorCode(StrEnum):
    DUMP_KILLED = "dump_killed"
    DUMP_FAILED = "dump_failed"
    AUTH_FAILED = "auth_failed"
    #: Logged in, but the user may not do this (e.g. create a database).
    PERMISSION_DENIED = "permission_denied"
    UNREACHABLE = "unreachable"
    DATABASE_MISSING = "database_missing"
    SOURCE_MISSING = "source_missing"
    DISK_FULL = "disk_full"
    TOOL_MISSING = "tool_missing"
    TOOL_VERSION = "tool_version"
    STORAGE_FAILED = "storage_failed"
    PIPELINE_FAILED = "pipeline_failed"
    STALLED = "stalled"
    TIME_LIMIT = "time_limit"
    CANCELLED = "cancelled"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    #: The stored artifact (or its manifest) is not in its storage.
    ARTIFACT_MISSING = "artifact_missing"
    DECRYPT_FAILED = "decrypt_failed"
    DECOMPRESS_FAILED = "decompress_failed"
    RESTORE_FAILED = "restore_failed"
    TARGET_NOT_EMPTY = "target_not_empty"
    VERIFY_FAILED = "verify_failed"
    MANIFEST_INVALID = "manifest_invalid"
    INVALID_CONFIG = "invalid_config"


#: Codes for which a retry cannot help (no backoff loop should retry them).
PERMANENT: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.AUTH_FAILED,
        ErrorCode.PERMISSION_DENIED,
        ErrorCode.DATABASE_MISSING,
        ErrorCode.SOURCE_MISSING,
        ErrorCode.DISK_FULL,
        ErrorCode.TOOL_MISSING,
        ErrorCode.TOOL_VERSION,
        ErrorCode.CHECKSUM_MISMATCH,
        ErrorCode.ARTIFACT_MISSING,
        ErrorCode.DECRYPT_FAILED,
        ErrorCode.DECOMPRESS_FAILED,
        ErrorCode.TARGET_NOT_EMPTY,
        ErrorCode.VERIFY_FAILED,
        ErrorCode.MANIFEST_INVALID,
        ErrorCode.INVALID_CONFIG,
        ErrorCode.CANCELLED,
    }
)


class BackupError(Exception):
    """A classified failure. ``str(err)`` is safe to log and show (no secrets)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        stage: str = "",
        detail: str = "",
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.stage = stage
        #: Extra diagnostic text (e.g. the scrubbed tail of the tool's stderr).
        self.detail = detail
        #: Known permanent whatever the code (e.g. a storage refusing for good).
        self.permanent = permanent

    @property
    def retryable(self) -> bool:
        return not self.permanent and self.code not in PERMANENT

    def __str__(self) -> str:
        text = f"{self.code.value}: {self.message}"
        if self.detail:
            text += f"\n{self.detail}"
        return text

    def __repr__(self) -> str:
        return f"BackupError({self.code.value!r}, {self.message!r}, stage={self.stage!r})"


_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?P<post>@)", re.I)
_KV_PASSWORD = re.compile(
    r"(?P<pre>\b(?:password|passwd|pwd|PGPASSWORD|MYSQL_PWD)\s*[=:]\s*)(?P<val>'[^']*'|\"[^\"]*\"|\S+)",
    re.I,
)
_AGE_SECRET = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+")


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove known secret values and password-looking fragments from ``text``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= 1:
            text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\g<pre>***\g<post>", text)
    text = _KV_PASSWORD.sub(r"\g<pre>***", text)
    return _AGE_SECRET.sub("AGE-SECRET-KEY-***", text)
