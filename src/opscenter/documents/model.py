"""The document model: what a report says, independent of the format it is rendered in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

#: A table cell: numbers stay numbers (CSV and JSON keep them exact; the PDF formats them).
Cell = str | int | float | None


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]


@dataclass(frozen=True)
class Chart:
    """A bar or line chart: one value per label in each series."""

    title: str
    kind: Literal["bar", "line"]
    labels: Sequence[str]
    series: Sequence[Series]
    unit: str = ""

    def __post_init__(self) -> None:
        for s in self.series:
            if len(s.values) != len(self.labels):
                raise ValueError(
                    f"series {s.name!r}: {len(s.values)} values for {len(self.labels)} labels"
                )


@dataclass(frozen=True)
class Table:
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    #: Said under the table, e.g. that it shows only the first N rows of more.
    note: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table {self.title!r}: a row of {len(row)} cells, "
                    f"for {len(self.columns)} columns"
                )


@dataclass(frozen=True)
class Section:
    heading: str
    paragraphs: Sequence[str] = ()
    tables: Sequence[Table] = ()
    charts: Sequence[Chart] = ()


@dataclass(frozen=True)
class ReportDocument:
    title: str
    period: str
    generated_at: datetime
    sections: Sequence[Section] = field(default_factory=tuple)
    subtitle: str = ""
