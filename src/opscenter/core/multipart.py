"""A multipart/form-data body read as it arrives (python-multipart's push parser): the
small form fields are kept, the one file part goes to a sink chunk by chunk, so no file is
ever held whole. The domain's sink decides where the bytes go (a storage writer, a spool
file) and what it accepts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from opscenter.core.errors import InvalidInput, PayloadTooLarge

FILE_FIELD = "file"


class FileSink(Protocol):
    async def start(self, filename: str) -> None:
        """The file part begins, under the name the client sent (unchecked)."""

    async def write(self, data: bytes) -> None: ...

    async def end(self) -> None:
        """The file part ended; its last byte was written."""


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a multipart/form-data content type; None for any other type."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    return boundary if kind == b"multipart/form-data" and boundary else None


class _Part:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.name = ""
        self.is_file = False
        self.data = bytearray()


async def read_form(
    stream: AsyncIterator[bytes],
    boundary: bytes,
    sink: FileSink,
    *,
    what: str,
    max_parts: int,
    max_field_bytes: int,
) -> dict[str, str]:
    """The form's text fields; its one file part, sent in the field `file`, went to `sink`.
    `what` names the file in errors ("report", "file")."""
    # The parser calls back synchronously; the sink is async: collect, then act.
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
    fields: dict[str, str] = {}
    parts = 0
    part = _Part()
    file_seen = file_open = False
    async for chunk in stream:
        try:
            parser.write(chunk)
        except MultipartParseError as err:
            raise InvalidInput(f"The multipart body is malformed: {err}") from None
        for event, data in events:
            if event == "begin":
                parts += 1
                if parts > max_parts:
                    raise InvalidInput(f"At most {max_parts} form fields")
                part = _Part()
            elif event == "header":
                name, _, value = data.partition(b"\0")
                part.headers[name.decode("latin-1").lower()] = value.decode("utf-8", "replace")
            elif event == "headers":
                _, disposition = parse_options_header(part.headers.get("content-disposition"))
                part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
                filename = disposition.get(b"filename")
                if filename is not None:
                    if part.name != FILE_FIELD or file_seen:
                        raise InvalidInput(f"Send one {what}, in the field named {FILE_FIELD}")
                    part.is_file = file_seen = file_open = True
                    await sink.start(filename.decode("utf-8", "replace"))
            elif event == "data":
                if part.is_file:
                    await sink.write(data)
                else:
                    part.data.extend(data)
                    if len(part.data) > max_field_bytes:
                        raise PayloadTooLarge(
                            f"The field {part.name} is over {max_field_bytes} bytes"
                        )
            elif event == "end":
                if part.is_file:
                    file_open = False
                    await sink.end()
                else:
                    _keep(fields, part)
        events.clear()
    parser.finalize()
    if file_open:
        raise InvalidInput(f"The multipart body ended inside the {what}")
    return fields


def _keep(fields: dict[str, str], part: _Part) -> None:
    if part.name in fields:
        raise InvalidInput(f"The field {part.name} is given twice")
    try:
        fields[part.name] = part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"The field {part.name} is not UTF-8 text") from None
