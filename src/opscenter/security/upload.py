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

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from opscenter.core.errors import AppError, InvalidInput, PayloadTooLarge, UnsupportedMediaType

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


async def receive(
    stream: AsyncIterator[bytes], content_type: str, spool_dir: Path, max_bytes: int
) -> Upload:
    """The form, with the file named `file` on disk; nothing is left behind on an error."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType(
            "Send multipart/form-data with the report in the field named file"
        )
    os.makedirs(spool_dir, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="security-", suffix=".json", dir=spool_dir)
    upload = Upload()
    digest = hashlib.sha256()
    state: dict[str, object] = {"parts": 0, "name": "", "is_file": False}
    value = bytearray()
    problems: list[AppError] = []

    def on_part_begin() -> None:
        state["parts"] = int(str(state["parts"])) + 1
        if int(str(state["parts"])) > MAX_PARTS:
            problems.append(InvalidInput(f"At most {MAX_PARTS} form fields"))
        state["name"], state["is_file"] = "", False
        value.clear()

    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}

    def on_header_end() -> None:
        if bytes(header["field"]).lower() == b"content-disposition":
            _, disposition = parse_options_header(bytes(header["value"]))
            state["name"] = disposition.get(b"name", b"").decode("utf-8", "replace")
            filename = disposition.get(b"filename")
            if filename is not None:
                if state["name"] != "file" or upload.path is not None:
                    problems.append(InvalidInput("Send one report, in the field named file"))
                state["is_file"] = True
                upload.filename = _display(filename.decode("utf-8", "replace"))
        header["field"].clear()
        header["value"].clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state["is_file"]:
            upload.size += len(chunk)
            if upload.size > max_bytes:
                problems.append(
                    PayloadTooLarge(f"Scanner reports are limited to {max_bytes} bytes")
                )
                return
            digest.update(chunk)
            os.write(fd, chunk)
        else:
            value.extend(chunk)
            if len(value) > MAX_FIELD_BYTES:
                problems.append(PayloadTooLarge(f"The field {state['name']} is too long"))

    def on_part_end() -> None:
        if state["is_file"]:
            upload.path = Path(name)
        elif str(state["name"]) in upload.fields:
            problems.append(InvalidInput(f"The field {state['name']} is given twice"))
        else:
            try:
                upload.fields[str(state["name"])] = value.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(InvalidInput(f"The field {state['name']} is not UTF-8"))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": lambda d, s, e: header["field"].extend(d[s:e]),
            "on_header_value": lambda d, s, e: header["value"].extend(d[s:e]),
            "on_header_end": on_header_end,
        },
    )
    try:
        async for chunk in stream:
            try:
                parser.write(chunk)
            except MultipartParseError as err:
                raise InvalidInput(f"The multipart body is malformed: {err}") from None
            if problems:
                raise problems[0]
        parser.finalize()
        if upload.path is None:
            raise InvalidInput("No report: send the file in the field named file")
        if upload.size == 0:
            raise InvalidInput("The report is empty")
        upload.sha256 = digest.hexdigest()
        return upload
    except BaseException:
        remove(Path(name))
        raise
    finally:
        os.close(fd)


def _display(raw: str) -> str:
    """The report's name as shown: its last path segment, without control characters."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in base if c.isprintable())[:255] or "report.json"
