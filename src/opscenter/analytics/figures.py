"""Periods, time buckets and the backup aggregate shared by metrics, trends and reports.

Every figure is one GROUP BY in the database; buckets are computed there from epoch
seconds (PostgreSQL's `extract(epoch ...)`, SQLite's `julianday`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Integer, and_, case, cast, false, func
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.analytics.schemas import BackupFigures, Window
from opscenter.core.errors import InvalidInput
from opscenter.models import Backup, BackupStatus
from opscenter.verify.service import PASSED

DAY = 86400
WEEK = 7 * DAY
MAX_DAYS = 366
MAX_POINTS = 400
#: 1970-01-05 was a Monday: weeks counted from it start on Mondays.
MONDAY_ORIGIN = 4 * DAY
FINISHED = (BackupStatus.COMPLETED, BackupStatus.FAILED, BackupStatus.INTERRUPTED)
VERIFIED = tuple(PASSED.values())
_DAYS = re.compile(r"^(\d{1,3})d$")
_STEP = re.compile(r"^(\d{1,4})([hd])$")


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @property
    def days(self) -> int:
        return round((self.end - self.start).total_seconds() / DAY)

    def out(self) -> Window:
        return Window(start=self.start, end=self.end, days=self.days)


def parse_window(text: str, now: datetime) -> Period:
    """`Nd`: the last N days up to `now`."""
    m = _DAYS.match(text.strip().lower())
    if m is None or not 1 <= int(m.group(1)) <= MAX_DAYS:
        raise InvalidInput(f"window: a number of days from 1d to {MAX_DAYS}d, such as 7d or 30d")
    return Period(now - timedelta(days=int(m.group(1))), now)


def parse_step(text: str, period: Period) -> int:
    """`Nh` or `Nd` in seconds, at most MAX_POINTS steps in the period."""
    m = _STEP.match(text.strip().lower())
    if m is None or int(m.group(1)) < 1:
        raise InvalidInput("step: a number of hours or days, such as 6h, 1d or 7d")
    step = int(m.group(1)) * (3600 if m.group(2) == "h" else DAY)
    if (period.end - period.start).total_seconds() / step > MAX_POINTS:
        raise InvalidInput(f"step: at most {MAX_POINTS} points per window; take a longer step")
    return step


def epoch(session: AsyncSession, column: Any) -> ColumnElement[float]:
    """Seconds since 1970 of a datetime column, on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", column), Float)
    return (func.julianday(column) - 2440587.5) * float(DAY)


def bucket(session: AsyncSession, column: Any, origin: float, step: int) -> ColumnElement[int]:
    """Which step of `step` seconds from `origin` (epoch seconds) a datetime falls in; the
    rows are at or after `origin`, so truncation is the floor."""
    offset = (epoch(session, column) - origin) / float(step)
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.floor(offset), Integer)
    return cast(offset, Integer)


def backup_filter(period: Period) -> ColumnElement[bool]:
    """Backups made here (not copies, not imported) that ended, started in the period."""
    return and_(
        Backup.status.in_(FINISHED),
        Backup.created_at >= period.start,
        Backup.created_at < period.end,
        Backup.copy_of_id.is_(None),
        Backup.imported == false(),
    )


def backup_columns() -> list[Any]:
    done = Backup.status == BackupStatus.COMPLETED
    return [
        func.count().label("finished"),
        func.sum(case((done, 1), else_=0)).label("completed"),
        func.avg(case((done, Backup.duration_seconds))).label("mean_duration"),
        func.avg(case((done, Backup.size_bytes))).label("mean_size"),
        func.sum(case((done, Backup.size_bytes), else_=0)).label("total_size"),
        func.sum(case((and_(done, Backup.verification_status.in_(VERIFIED)), 1), else_=0)).label(
            "verified"
        ),
    ]


def percent(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100.0 * part / whole, 2)


def rounded(value: Any, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def backup_figures(row: Any) -> BackupFigures:
    finished, completed = int(row.finished or 0), int(row.completed or 0)
    return BackupFigures(
        finished=finished,
        completed=completed,
        failed=finished - completed,
        success_rate=percent(completed, finished),
        mean_duration_seconds=rounded(row.mean_duration),
        mean_size_bytes=rounded(row.mean_size),
        total_size_bytes=int(row.total_size or 0),
    )
