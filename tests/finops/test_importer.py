"""The reading thread's shortcut for PostgreSQL: a FOCUS row whose groups of texts (dates
and times, names, tags) were parsed before is encoded from what they gave, not parsed
again. It must write the bytes and report the rejections the parser's own path does,
row for row, whatever repeats and whatever is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opscenter.finops import formats, importer
from tests.finops.helpers import FOCUS_HEADER, focus_row, to_csv


def _rows() -> list[list[str]]:
    rows = []
    amounts = ["1.25", "0.000000001", "12", "3.", "-2.5", "1e3", "١٢", "1_000", "123456789.5"]
    amounts += ["1234567890", "0.1234567891", "", " 4.5", "NaN", "x", "2.000000000"]
    for i in range(400):
        day = f"2026-10-{1 + i % 3:02d}"
        tags = [{}, {"team": "web", "env": "prod"}, {"environment": "staging"}][i % 3]
        row = focus_row(
            day,
            ["Amazon RDS", "Amazon S3", ""][i % 7 % 3],
            amounts[i % len(amounts)],
            ["USD", "EUR", "usd", "dollars"][i % 11 % 4],
            effective=amounts[(i * 7) % len(amounts)],
            category=["Usage", "credit", "Nonsense"][i % 13 % 3],
            tags=tags,
            resource=["", f"i-{i}", " padded "][i % 5 % 3],
        )
        if i % 17 == 0:
            row[2] = f"{day}T23:59:59Z"  # starts after it ends
            row[3] = f"{day}T00:00:00Z"
        if i % 19 == 0:
            row[0] = "2026-13-01T00:00:00Z"  # not a date
        if i % 23 == 0:
            row[12] = "[1]"  # tags that are not an object
        rows.append(row)
    return rows


def _general(fmt: formats.Format, encoder: importer.CopyEncoder) -> Any:
    def convert(header: list[str]) -> Callable[[list[str]], bytes]:
        parse = formats.row_parser(fmt, header)
        return lambda row: encoder.line(parse(row))

    return convert


@pytest.mark.parametrize(
    "header",
    [
        FOCUS_HEADER,
        [*FOCUS_HEADER, "ResourceName"],  # a resource name per row
        [c for c in FOCUS_HEADER if c not in ("Tags", "ChargeCategory", "ResourceId")],
    ],
)
def test_repeated_groups_encode_as_the_parser_would(tmp_path: Path, header: list[str]) -> None:
    fmt = formats.FORMATS["focus"]
    rows = []
    for n, row in enumerate(_rows()):
        values = dict(zip(FOCUS_HEADER, row, strict=True))
        values["ResourceName"] = ["", f"db-{n % 4}", "  web  "][n % 3]
        rows.append([values[c] for c in header])
    path = tmp_path / "focus.csv"
    path.write_bytes(to_csv(header, rows))
    got, want = importer.Progress(), importer.Progress()
    sets_got, sets_want = importer.TagSets(), importer.TagSets()
    fast = importer.CopyEncoder(1, 2, sets_got).converter(fmt)
    slow = _general(fmt, importer.CopyEncoder(1, 2, sets_want))
    assert list(importer.read_batches(path, got, fast)) == list(
        importer.read_batches(path, want, slow)
    )
    assert got.kept == want.kept and got.rows == want.rows == 400
    assert 0 < got.rejected < 400
    assert [json.dumps(t) for _, t in sets_got.new] == [json.dumps(t) for _, t in sets_want.new]
