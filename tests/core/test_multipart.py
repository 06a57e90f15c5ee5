"""core.multipart: a form read as it arrives, the file part handed to a sink chunk by chunk,
and every malformed or oversized form refused with a sentence."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from opscenter.core.errors import AppError, InvalidInput, PayloadTooLarge
from opscenter.core.multipart import boundary_of, read_form

BOUNDARY = b"x-boundary-1"


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.data = bytearray()

    async def start(self, filename: str) -> None:
        self.events.append(f"start {filename}")

    async def write(self, data: bytes) -> None:
        self.data.extend(data)

    async def end(self) -> None:
        self.events.append("end")


def body(*parts: tuple[str, str | None, bytes], close: bool = True) -> bytes:
    out = bytearray()
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode()
        out += b"\r\n\r\n" + value + b"\r\n"
    if close:
        out += b"--" + BOUNDARY + b"--\r\n"
    return bytes(out)


async def chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read(data: bytes, sink: Recorder | None = None) -> dict[str, str]:
    return await read_form(
        chunks(data), BOUNDARY, sink or Recorder(), what="report", max_parts=3, max_field_bytes=16
    )


async def test_fields_kept_and_the_file_streamed_to_the_sink() -> None:
    report = b'{"runs": []}' * 50
    sink = Recorder()
    fields = await read(body(("scanner", None, b"trivy"), ("file", "r.json", report)), sink)
    assert fields == {"scanner": "trivy"}
    assert sink.events == ["start r.json", "end"] and bytes(sink.data) == report
    assert boundary_of(f"multipart/form-data; boundary={BOUNDARY.decode()}") == BOUNDARY
    assert boundary_of("application/json") is None
    assert boundary_of("multipart/form-data") is None


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"--x-boundary-1\r\nnot a header line\r\n", InvalidInput, "malformed"),
        (body(("a", None, b"1"), ("b", None, b"2"), ("c", None, b"3"), ("d", None, b"4")),
         InvalidInput, "At most 3"),
        (body(("file", "a", b"1"), ("file", "b", b"2")), InvalidInput, "Send one report"),
        (body(("other", "a.json", b"1")), InvalidInput, "field named file"),
        (body(("a", None, b"1"), ("a", None, b"2")), InvalidInput, "given twice"),
        (body(("a", None, b"\xff\xfe")), InvalidInput, "not UTF-8"),
        (body(("a", None, b"x" * 17)), PayloadTooLarge, "over 16 bytes"),
        (body(("file", "a", b"1"), close=False)[:-2], InvalidInput, "ended inside the report"),
    ],
)  # fmt: skip
async def test_bad_forms_are_refused_in_words(
    data: bytes, error: type[AppError], words: str
) -> None:
    with pytest.raises(error) as raised:
        await read(data)
    assert words in raised.value.detail
