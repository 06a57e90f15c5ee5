"""A scanner report sent as multipart/form-data: the small fields kept, the file part
streamed to a temporary file under the data dir, hashed and counted on the way and
refused once over the limit. The caller removes the file when done with it."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from opscenter.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from opscenter.core.multipart import boundary_of, read_form

MAX_FIELD_BYTES = 4096
MAX_PARTS = 8


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    filename: str = ""
    sha256: str = ""
    size: int = 0


def remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


class _Spool:
    """The report's bytes into a temporary file, hashed and counted."""

    def __init__(self, fd: int, path: Path, max_bytes: int) -> None:
        self.fd = fd
        self.upload = Upload()
        self.path = path
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()

    async def start(self, filename: str) -> None:
        self.upload.filename = _display(filename)

    async def write(self, data: bytes) -> None:
        self.upload.size += len(data)
        if self.upload.size > self.max_bytes:
            raise PayloadTooLarge(f"Scanner reports are limited to {self.max_bytes} bytes")
        self.digest.update(data)
        os.write(self.fd, data)

    async def end(self) -> None:
        self.upload.path = self.path
        self.upload.sha256 = self.digest.hexdigest()


async def receive(
    stream: AsyncIterator[bytes], content_type: str, spool_dir: Path, max_bytes: int
) -> Upload:
    """The form, with the file named `file` on disk; nothing is left behind on an error."""
    boundary = boundary_of(content_type)
    if boundary is None:
        raise UnsupportedMediaType(
            "Send multipart/form-data with the report in the field named file"
        )
    os.makedirs(spool_dir, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="security-", suffix=".json", dir=spool_dir)
    spool = _Spool(fd, Path(name), max_bytes)
    try:
        spool.upload.fields = await read_form(
            stream,
            boundary,
            spool,
            what="report",
            max_parts=MAX_PARTS,
            max_field_bytes=MAX_FIELD_BYTES,
        )
        if spool.upload.path is None:
            raise InvalidInput("No report: send the file in the field named file")
        if spool.upload.size == 0:
            raise InvalidInput("The report is empty")
        return spool.upload
    except BaseException:
        remove(Path(name))
        raise
    finally:
        os.close(fd)


def _display(raw: str) -> str:
    """The report's name as shown: its last path segment, without control characters."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in base if c.isprintable())[:255] or "report.json"
