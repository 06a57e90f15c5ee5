"""The document renderers without a database: the PDF's text is real text (tables, chart
axes and legends included), CSV and JSON carry every table, and malformed documents are
refused when they are made, not when they are rendered."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from opscenter.documents import (
    Chart,
    ReportDocument,
    Section,
    Series,
    Table,
    to_csv,
    to_html,
    to_json,
    to_pdf,
)
from tests.reports.helpers import pdf_text

WHEN = datetime(2026, 11, 30, 18, 5, tzinfo=UTC)


def sample() -> ReportDocument:
    return ReportDocument(
        title='Quarter <review> & "notes"',
        period="2026-Q3",
        generated_at=WHEN,
        subtitle="Team payments",
        sections=[
            Section(
                "Totals",
                ["Everything, in one place."],
                [
                    Table(
                        "By status",
                        ["Status", "Count", "Share"],
                        [["ok", 1234, 0.5], ["bad", 7, None]],
                    ),
                    Table("Empty", ["Name"], []),
                ],
                [
                    Chart(
                        "Per month", "bar", ["2026-07", "2026-08"], [Series("ok", [3, 40])], "runs"
                    )
                ],
            ),
            Section(
                "Trend",
                tables=[
                    Table("Days", ["Day", "Value"], [["2026-07-01", 2.25]], note="Only one day.")
                ],
                charts=[Chart("Daily", "line", ["a", "b", "c"], [Series("v", [1, 0, 2])])],
            ),
        ],
    )


def test_pdf_text_is_real_text() -> None:
    out = io.BytesIO()
    to_pdf(sample(), out)
    text = " ".join(pdf_text(out.getvalue()).split())
    assert 'Quarter <review> & "notes"' in text  # escaped in HTML, plain text in the PDF
    assert "Period 2026-Q3 · Team payments · generated 2026-11-30 18:05 UTC" in text
    assert "ok 1,234 0.50" in text and "bad 7 -" in text
    assert "No rows in this period." in text
    assert "Only one day." in text
    # The SVG chart's title, axis (a round maximum of 50) and legend are text too.
    assert "Per month (runs)" in text and "50" in text and "2026-08" in text
    assert "Page 1 of 2" in text and "Page 2 of 2" in text


def test_html_escapes_what_it_is_given() -> None:
    html = to_html(sample())
    assert "<review>" not in html and "&lt;review&gt;" in html
    assert html.count("<svg") == 2


def test_csv_has_every_table_with_its_section() -> None:
    rows = list(csv.reader(io.StringIO("".join(to_csv(sample())))))
    assert rows == [
        ["section", "table", "Status", "Count", "Share"],
        ["Totals", "By status", "ok", "1234", "0.5"],
        ["Totals", "By status", "bad", "7", ""],
        [],
        ["section", "table", "Name"],
        [],
        ["section", "table", "Day", "Value"],
        ["Trend", "Days", "2026-07-01", "2.25"],
    ]


def test_json_keeps_numbers_and_structure() -> None:
    doc = json.loads(to_json(sample()))
    assert doc["generated_at"] == "2026-11-30T18:05:00Z"
    assert doc["sections"][0]["tables"][0]["rows"] == [["ok", 1234, 0.5], ["bad", 7, None]]
    assert doc["sections"][1]["charts"][0] == {
        "title": "Daily",
        "kind": "line",
        "unit": "",
        "labels": ["a", "b", "c"],
        "series": [{"name": "v", "values": [1, 0, 2]}],
    }


def test_malformed_parts_are_refused() -> None:
    with pytest.raises(ValueError, match="2 cells"):
        Table("t", ["a"], [["x", "y"]])
    with pytest.raises(ValueError, match="1 values for 2 labels"):
        Chart("c", "bar", ["a", "b"], [Series("s", [1])])
