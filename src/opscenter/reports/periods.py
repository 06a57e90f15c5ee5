"""A report's period: a month (`2026-11`), a quarter (`2026-Q4`), a year (`2026`) or a
range of days (`2026-11-01..2026-11-15`, both days included), always absolute, so
generating the same kind and period again describes the same days."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

MAX_RANGE_DAYS = 366
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_QUARTER = re.compile(r"^(\d{4})-[Qq]([1-4])$")
_YEAR = re.compile(r"^(\d{4})$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")
HELP = "a month (2026-11), a quarter (2026-Q4), a year (2026) or days (2026-11-01..2026-11-15)"


@dataclass(frozen=True)
class Period:
    name: str  # canonical
    start: date
    end: date  # exclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def bounds(self) -> tuple[datetime, datetime]:
        """The period as UTC instants, end exclusive."""
        return (
            datetime.combine(self.start, time(), UTC),
            datetime.combine(self.end, time(), UTC),
        )

    def label(self) -> str:
        last = self.end - timedelta(days=1)
        return f"{self.name} ({self.start.isoformat()} to {last.isoformat()})"


def _month_start(year: int, month: int) -> date:
    return date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


def parse_period(text: str, today: date) -> Period:
    """The canonical period, or ValueError saying what is accepted."""
    text = text.strip()
    try:
        if m := _MONTH.match(text):
            year, month = int(m[1]), int(m[2])
            period = Period(
                f"{year:04d}-{month:02d}", date(year, month, 1), _month_start(year, month + 1)
            )
        elif m := _QUARTER.match(text):
            year, q = int(m[1]), int(m[2])
            first = 3 * (q - 1) + 1
            period = Period(f"{year:04d}-Q{q}", date(year, first, 1), _month_start(year, first + 3))
        elif m := _YEAR.match(text):
            year = int(m[1])
            period = Period(f"{year:04d}", date(year, 1, 1), date(year + 1, 1, 1))
        elif m := _RANGE.match(text):
            start, last = date.fromisoformat(m[1]), date.fromisoformat(m[2])
            if not 0 <= (last - start).days < MAX_RANGE_DAYS:
                raise ValueError(
                    f"a range of days ends on or after its start, {MAX_RANGE_DAYS} days at most"
                )
            period = Period(
                f"{start.isoformat()}..{last.isoformat()}", start, last + timedelta(days=1)
            )
        else:
            raise ValueError(f"period: {HELP}")
    except ValueError as err:
        message = str(err)
        raise ValueError(
            message if message.startswith(("period", "a range")) else f"period: {HELP}"
        ) from None
    if period.start.year < 2000:
        raise ValueError("period: from the year 2000 on")
    if period.start > today:
        raise ValueError("period: it has not begun yet")
    return period
