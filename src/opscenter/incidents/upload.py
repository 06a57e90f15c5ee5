"""Evidence sent as a form: multipart (`core.multipart`), its one file part going straight
into a storage writer, hashed and counted on the way, its type judged on its first bytes;
or urlencoded, for text evidence."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import filetype
from python_multipart.multipart import parse_options_header

from opscenter.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from opscenter.core.multipart import boundary_of, read_form
from opscenter.stores.backends import StorageWriter

#: Judged on the content, never on the name: what a file really is.
ALLOWED_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-tar",
        "text/plain",
    }
)
SNIFF_BYTES = 8192
MAX_FIELD_BYTES = 1024 * 1024  # text content is a field too
MAX_PARTS = 10
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def sniff(head: bytes) -> str | None:
    """The media type of a file from its first bytes, if it is one we accept."""
    kind = filetype.guess(head)
    if kind is not None:
        return str(kind.mime) if kind.mime in ALLOWED_TYPES else None
    if b"\x00" in head:
        return None
    try:
        # A multi-byte character may be cut at the end of the sample.
        head.decode("utf-8") if len(head) < SNIFF_BYTES else head[:-4].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text/plain"


def display_name(raw: str) -> str:
    """The name a file is shown and downloaded under: its last path segment only. It
    never becomes a storage path (objects are stored under generated keys)."""
    if _CONTROL.search(raw):
        raise InvalidInput("The file name contains control characters; rename the file")
    name = re.split(r"[/\\]", raw)[-1].strip()
    if name in ("", ".", ".."):
        raise InvalidInput("The file has no usable name; give it one")
    return name[:255]


@dataclass
class StoredFile:
    name: str
    sha256: str
    size: int
    media_type: str
    key: str


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    file: StoredFile | None = None


OpenWriter = Callable[[], Awaitable[StorageWriter]]
Validate = Callable[[Form], Awaitable[None]]


async def receive(
    stream: AsyncIterator[bytes],
    content_type: str,
    *,
    open_writer: OpenWriter,
    max_file_bytes: int,
    validate: Validate,
) -> Form:
    """Parse the body; store the file part through `open_writer`. `validate` sees the
    whole form before the object is committed: if it raises, nothing is kept."""
    kind, _ = parse_options_header(content_type)
    if kind == b"application/x-www-form-urlencoded":
        form = await _urlencoded(stream)
        await validate(form)
        return form
    boundary = boundary_of(content_type)
    if boundary is None:
        raise UnsupportedMediaType(
            "Send multipart/form-data (or a urlencoded form for text) with title, type "
            "and a file or content"
        )
    sink = _FileSink(open_writer, max_file_bytes)
    try:
        fields = await read_form(
            stream,
            boundary,
            sink,
            what="file",
            max_parts=MAX_PARTS,
            max_field_bytes=MAX_FIELD_BYTES,
        )
        form = Form(fields, sink.stored)
        await validate(form)
        await sink.commit()
        return form
    except BaseException:
        await sink.abort()
        raise


async def _urlencoded(stream: AsyncIterator[bytes]) -> Form:
    """A form without a file: text evidence."""
    body = bytearray()
    async for chunk in stream:
        body.extend(chunk)
        if len(body) > 2 * MAX_FIELD_BYTES:
            raise PayloadTooLarge(
                f"A form without a file is limited to {2 * MAX_FIELD_BYTES} bytes"
            )
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("The form is not valid urlencoded UTF-8") from None
    form = Form()
    for name, value in pairs:
        if name in form.fields:
            raise InvalidInput(f"The field {name} is given twice")
        form.fields[name] = value
    return form


class _FileSink:
    """Holds back the first bytes until their type is judged, then streams."""

    def __init__(self, open_writer: OpenWriter, max_bytes: int) -> None:
        self.open_writer = open_writer
        self.max_bytes = max_bytes
        self.head = bytearray()
        self.hash = hashlib.sha256()
        self.size = 0
        self.name = ""
        self.writer: StorageWriter | None = None
        self.media_type: str | None = None
        self.stored: StoredFile | None = None

    async def start(self, filename: str) -> None:
        self.name = display_name(filename)

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(f"Evidence files are limited to {self.max_bytes} bytes")
        self.hash.update(data)
        if self.writer is None:
            self.head.extend(data)
            if len(self.head) >= SNIFF_BYTES:
                await self._start()
        else:
            await self.writer.write(data)

    async def _start(self) -> None:
        self.media_type = sniff(bytes(self.head[:SNIFF_BYTES]))
        if self.media_type is None:
            allowed = ", ".join(sorted(ALLOWED_TYPES))
            raise UnsupportedMediaType(
                f"This kind of file is not accepted as evidence; send one of: {allowed}"
            )
        self.writer = await self.open_writer()
        await self.writer.write(bytes(self.head))
        self.head.clear()

    async def end(self) -> None:
        if self.size == 0:
            raise InvalidInput("The file is empty")
        if self.writer is None:
            await self._start()
        assert self.writer is not None and self.media_type is not None
        self.stored = StoredFile(
            self.name, self.hash.hexdigest(), self.size, self.media_type, self.writer.key
        )

    async def commit(self) -> None:
        if self.writer is not None:
            await self.writer.commit()

    async def abort(self) -> None:
        if self.writer is not None:
            await self.writer.abort()
