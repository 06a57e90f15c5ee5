"""A multipart/form-data body read as it arrives: the form fields are kept (they are
small), the one file part goes straight into a storage writer, hashed and counted on the
way, its type judged on its first bytes. Nothing of the file is held whole."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import filetype
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from opscenter.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
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


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    file_name: str | None = None
    data: bytearray = field(default_factory=bytearray)


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
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind == b"application/x-www-form-urlencoded":
        form = await _urlencoded(stream)
        await validate(form)
        return form
    if kind != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType(
            "Send multipart/form-data (or a urlencoded form for text) with title, type "
            "and a file or content"
        )
    events: list[tuple[str, bytes]] = []
    header_field = bytearray()
    header_value = bytearray()

    def on_header_end() -> None:
        events.append(("header", bytes(header_field) + b"\0" + bytes(header_value)))
        header_field.clear()
        header_value.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": lambda: events.append(("begin", b"")),
            "on_part_data": lambda d, s, e: events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: events.append(("end", b"")),
            "on_header_field": lambda d, s, e: header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: header_value.extend(d[s:e]),
            "on_header_end": on_header_end,
            "on_headers_finished": lambda: events.append(("headers", b"")),
        },
    )
    form = Form()
    reader = _FileSink(open_writer, max_file_bytes)
    try:
        parts = 0
        part = _Part()
        async for chunk in stream:
            try:
                parser.write(chunk)
            except MultipartParseError as err:
                raise InvalidInput(f"The multipart body is malformed: {err}") from None
            for what, data in events:
                if what == "begin":
                    parts += 1
                    if parts > MAX_PARTS:
                        raise InvalidInput(f"At most {MAX_PARTS} form fields")
                    part = _Part()
                elif what == "header":
                    name, _, value = data.partition(b"\0")
                    part.headers[name.decode("latin-1").lower()] = value.decode("utf-8", "replace")
                elif what == "headers":
                    _, disposition = parse_options_header(part.headers.get("content-disposition"))
                    part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
                    raw_name = disposition.get(b"filename")
                    if raw_name is not None:
                        if part.name != "file" or reader.started:
                            raise InvalidInput("Send one file, in the field named file")
                        part.file_name = display_name(raw_name.decode("utf-8", "replace"))
                elif what == "data":
                    if part.file_name is not None:
                        await reader.write(data)
                    else:
                        part.data.extend(data)
                        if len(part.data) > MAX_FIELD_BYTES:
                            raise PayloadTooLarge(
                                f"The field {part.name} is over {MAX_FIELD_BYTES} bytes"
                            )
                elif what == "end":
                    if part.file_name is not None:
                        form.file = await reader.finish(part.file_name)
                    else:
                        _keep_field(form, part)
            events.clear()
        parser.finalize()
        if form.file is None and reader.started:
            raise InvalidInput("The multipart body ended inside the file")
        await validate(form)
        await reader.commit()
        return form
    except BaseException:
        await reader.abort()
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


def _keep_field(form: Form, part: _Part) -> None:
    if part.name in form.fields:
        raise InvalidInput(f"The field {part.name} is given twice")
    try:
        form.fields[part.name] = part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"The field {part.name} is not UTF-8 text") from None


class _FileSink:
    """Holds back the first bytes until their type is judged, then streams."""

    def __init__(self, open_writer: OpenWriter, max_bytes: int) -> None:
        self.open_writer = open_writer
        self.max_bytes = max_bytes
        self.head = bytearray()
        self.hash = hashlib.sha256()
        self.size = 0
        self.started = False
        self.writer: StorageWriter | None = None
        self.media_type: str | None = None

    async def write(self, data: bytes) -> None:
        self.started = True
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

    async def finish(self, name: str) -> StoredFile:
        if self.size == 0:
            raise InvalidInput("The file is empty")
        if self.writer is None:
            await self._start()
        assert self.writer is not None and self.media_type is not None
        return StoredFile(name, self.hash.hexdigest(), self.size, self.media_type, self.writer.key)

    async def commit(self) -> None:
        if self.writer is not None:
            await self.writer.commit()

    async def abort(self) -> None:
        if self.writer is not None:
            await self.writer.abort()
