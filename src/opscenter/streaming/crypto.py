"""age encryption (https://age-encryption.org/v1) with X25519 keys, via pyrage.

Artifacts are standard age files: ``age -d -i key.txt FILE`` decrypts them. age's
payload is STREAM-encrypted in 64 KiB ChaCha20-Poly1305 chunks whose last one is
flagged, so a bit flip or a truncation (even at a chunk boundary) fails decryption.

pyrage's ``encrypt_io``/``decrypt_io`` stream between Python file-like objects and
release the GIL while they work; the pipeline runs them on worker threads.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pyrage

from opscenter.core.failures import BackupError, ErrorCode

__all__ = [
    "ReadableStream",
    "WritableStream",
    "decrypt_stream",
    "encrypt_stream",
    "generate_identity",
    "identity_file_text",
    "key_id",
    "load_identity_file",
    "parse_identities",
    "parse_recipients",
    "recipient_of",
    "write_identity_file",
]


class ReadableStream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class WritableStream(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


def generate_identity() -> str:
    """A new X25519 identity, ``AGE-SECRET-KEY-1...``."""
    return str(pyrage.x25519.Identity.generate())


def recipient_of(identity: str) -> str:
    """The public recipient ``age1...`` of an identity."""
    return str(_identity(identity).to_public())


def key_id(recipient: str) -> str:
    """A short stable fingerprint of a recipient, for manifests and key rotation."""
    return "age-x25519:" + hashlib.sha256(recipient.strip().encode()).hexdigest()[:16]


def _identity(text: str) -> pyrage.x25519.Identity:
    try:
        return pyrage.x25519.Identity.from_str(text.strip())
    except Exception as exc:
        raise BackupError(ErrorCode.INVALID_CONFIG, "invalid age identity") from exc


def parse_recipients(recipients: Iterable[str]) -> list[pyrage.x25519.Recipient]:
    out = []
    for r in recipients:
        try:
            out.append(pyrage.x25519.Recipient.from_str(r.strip()))
        except Exception as exc:
            raise BackupError(ErrorCode.INVALID_CONFIG, f"invalid age recipient {r!r}") from exc
    if not out:
        raise BackupError(ErrorCode.INVALID_CONFIG, "encryption needs at least one recipient")
    return out


def parse_identities(identities: Iterable[str]) -> list[pyrage.x25519.Identity]:
    """Identities from strings; each may be a whole key file (comments are skipped)."""
    out = []
    for text in identities:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(_identity(line))
    if not out:
        raise BackupError(ErrorCode.INVALID_CONFIG, "decryption needs at least one identity")
    return out


def identity_file_text(identity: str) -> str:
    """The identity in ``age-keygen``'s file format (usable with ``age -d -i``)."""
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    return f"# created: {created}\n# public key: {recipient_of(identity)}\n{identity.strip()}\n"


def write_identity_file(identity: str, path: str | os.PathLike[str]) -> Path:
    """Write a key file with mode 0600 (created exclusively: never overwrites a key)."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(identity_file_text(identity))
        fh.flush()
        os.fsync(fh.fileno())
    return p


def load_identity_file(path: str | os.PathLike[str]) -> str:
    """The first identity in a key file."""
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            _identity(line)
            return line
    raise BackupError(ErrorCode.INVALID_CONFIG, f"no age identity in {path}")


def encrypt_stream(
    reader: ReadableStream, writer: WritableStream, recipients: Sequence[str]
) -> None:
    """Encrypt everything ``reader`` yields to ``writer`` (blocking; run on a thread).

    pyrage flushes its final buffer while dropping its writer, where a Python
    exception cannot propagate: the writer must record its own failures and the
    caller must check them after this returns.
    """
    pyrage.encrypt_io(reader, writer, parse_recipients(recipients))


def decrypt_stream(
    reader: ReadableStream, writer: WritableStream, identities: Sequence[str]
) -> None:
    """Decrypt and authenticate; raises on a wrong key, a bit flip or a truncation."""
    try:
        pyrage.decrypt_io(reader, writer, parse_identities(identities))
    except (pyrage.DecryptError, OSError) as exc:
        # Header errors are DecryptError; payload errors (bit flip: "decryption error",
        # cut file: "age file is truncated") surface as OSError from the stream copy.
        raise BackupError(
            ErrorCode.DECRYPT_FAILED, f"age decryption failed: {exc}", stage="decrypt"
        ) from exc
