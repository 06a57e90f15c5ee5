"""Renderers of a `ReportDocument`: PDF (HTML through WeasyPrint), CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from opscenter.core.clock import isoformat_z
from opscenter.documents import svg
from opscenter.documents.model import Cell, ReportDocument

FORMATS = ("pdf", "csv", "json")
_MEDIA_TYPES = {
    "pdf": "application/pdf",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
}

_env = Environment(
    loader=PackageLoader("opscenter.documents", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def media_type(fmt: str) -> str:
    return _MEDIA_TYPES[fmt]


def cell_text(value: Cell) -> str:
    """How a cell reads in the PDF: thousands separated, two decimals for fractions."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return value


_env.filters["cell"] = cell_text
_env.filters["chart"] = lambda chart: Markup(svg.render(chart))  # noqa: S704 (escaped by svg)
_env.filters["utc"] = lambda when: when.strftime("%Y-%m-%d %H:%M UTC")


def to_html(doc: ReportDocument) -> str:
    return _env.get_template("report.html").render(doc=doc)


def to_pdf(doc: ReportDocument, out: BinaryIO) -> None:
    """The document as a PDF with real text (fonts embedded, charts as vector SVG).
    Blocking and CPU-bound: call it in a thread from async code."""
    # Imported here: WeasyPrint loads Pango through cffi, which only the PDF needs.
    from weasyprint import HTML

    HTML(string=to_html(doc)).write_pdf(out)


def to_csv(doc: ReportDocument) -> Iterator[str]:
    """Every table, one after another: a header line (`section`, `table`, its columns), its
    rows, then an empty line. Yields CSV text line by line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def line(cells: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(cells)
        return buffer.getvalue()

    first = True
    for section in doc.sections:
        for table in section.tables:
            if not first:
                yield "\n"
            first = False
            yield line(["section", "table", *table.columns])
            for row in table.rows:
                yield line([section.heading, table.title, *("" if c is None else c for c in row)])


def to_json(doc: ReportDocument) -> bytes:
    return json.dumps(
        {
            "title": doc.title,
            "subtitle": doc.subtitle,
            "period": doc.period,
            "generated_at": isoformat_z(doc.generated_at),
            "sections": [
                {
                    "heading": s.heading,
                    "paragraphs": list(s.paragraphs),
                    "tables": [
                        {
                            "title": t.title,
                            "columns": list(t.columns),
                            "rows": [list(r) for r in t.rows],
                            "note": t.note,
                        }
                        for t in s.tables
                    ],
                    "charts": [
                        {
                            "title": c.title,
                            "kind": c.kind,
                            "unit": c.unit,
                            "labels": list(c.labels),
                            "series": [
                                {"name": x.name, "values": list(x.values)} for x in c.series
                            ],
                        }
                        for c in s.charts
                    ],
                }
                for s in doc.sections
            ],
        },
        indent=1,
    ).encode()
