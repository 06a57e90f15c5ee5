"""Documents: a small, domain-free model of a report (title, period, sections of
paragraphs, tables and charts) and its renderers: PDF (an HTML template through
WeasyPrint, charts as inline SVG, so the PDF's text is real text), CSV and JSON.

A domain builds a `ReportDocument` from its own aggregates and hands it to a renderer:

    doc = ReportDocument("Backups", "2026-11", utcnow(), [Section("Totals", tables=[...])])
    with open(path, "wb") as out:
        to_pdf(doc, out)          # or: out.write(to_json(doc)); out.writelines(to_csv(doc))

Builders show aggregates, not raw rows: a detail table is capped by its builder, which says
so in the table's `note`, so a document's size (and the renderer's memory) stays bounded.
"""

from opscenter.documents.model import Cell, Chart, ReportDocument, Section, Series, Table
from opscenter.documents.render import FORMATS, media_type, to_csv, to_html, to_json, to_pdf

__all__ = [
    "FORMATS",
    "Cell",
    "Chart",
    "ReportDocument",
    "Section",
    "Series",
    "Table",
    "media_type",
    "to_csv",
    "to_html",
    "to_json",
    "to_pdf",
]
