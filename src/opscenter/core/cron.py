"""Cron expressions in an IANA timezone, evaluated with cronsim (Debian cron semantics).

The DST rule, as implemented here and stated in the API schema:

* Times are wall-clock times in the schedule's timezone; `next_run` is stored in UTC.
* A schedule with a fixed minute and hour (daily, weekly, monthly, `30 2 * * *`, ...)
  runs at most once per local date. On the spring-forward date a time inside the gap
  (02:30 in Europe/Berlin on the last Sunday of March) runs once, at the first valid
  minute after the gap (03:00 local). On the fall-back date a time that occurs twice runs
  once, at its first occurrence (still summer time).
* A schedule with `*` or a step in the minute or hour field (`*/15 * * * *`, `0 * * * *`)
  follows elapsed time: it runs through both copies of a repeated hour and skips none.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from cronsim import CronSim, CronSimError

MAX_LENGTH = 200
_WEEKDAY = re.compile(r"^[0-6]$")
_DAY = re.compile(r"^([1-9]|1[0-9]|2[0-8])$")
_NUMBER = re.compile(r"^\d{1,2}$")
# Names that resolve to files of the zoneinfo tree but are not portable zones.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES


def zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`; ValueError with a clear message otherwise."""
    if name not in _zones():
        raise ValueError(
            f"unknown timezone '{name[:64]}': use an IANA name such as 'UTC', "
            "'Europe/Berlin' or 'America/New_York'"
        )
    return ZoneInfo(name)


def normalize(expr: str) -> str:
    """A valid five-field cron expression, whitespace collapsed; ValueError otherwise."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron expression '{expr[:MAX_LENGTH]}' must have 5 fields "
            "(minute hour day-of-month month day-of-week), it has "
            f"{len(fields)}"
        )
    text = " ".join(fields)
    if len(text) > MAX_LENGTH:
        raise ValueError(f"cron expression longer than {MAX_LENGTH} characters")
    try:
        it = CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
        next(it)
    except CronSimError as err:
        raise ValueError(f"invalid cron expression '{text}': {err}") from None
    except StopIteration:
        raise ValueError(f"cron expression '{text}' never fires") from None
    except (ValueError, IndexError, KeyError, TypeError, OverflowError):
        raise ValueError(f"invalid cron expression '{text}'") from None
    return text


def fixed_time(expr: str) -> bool:
    """True for daily-or-longer schedules (fixed minute and hour): one run per local date."""
    minute, hour = expr.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


def _iterate(expr: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Occurrences strictly after `after` (aware), as UTC instants, in order."""
    after = after.astimezone(UTC)
    it = CronSim(expr, after.astimezone(tz))
    last: datetime | None = None
    while True:
        try:
            local = next(it)
        except StopIteration:
            return
        instant = local.astimezone(UTC)
        # Fixed-time schedules iterate wall-clock times; a start inside a repeated hour can
        # yield a time whose first occurrence already passed, and that one ran.
        if instant <= after or (last is not None and instant <= last):
            continue
        last = instant
        yield instant


def next_after(expr: str, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first occurrence strictly after `after`, in UTC (None: never within 50 years)."""
    return next(_iterate(expr, tz, after), None)


def count_between(expr: str, tz: ZoneInfo, start: datetime, end: datetime, cap: int) -> int:
    """How many occurrences fall in (start, end], counting at most `cap`."""
    count = 0
    for instant in _iterate(expr, tz, start):
        if instant > end or count >= cap:
            break
        count += 1
    return count


# -- seed 000's view: schedule_type + schedule_time (+ day_of_week / day_of_month) -------
@dataclass(frozen=True)
class Simple:
    schedule_type: str  # daily | weekly | monthly
    schedule_time: str  # HH:MM
    day_of_week: int | None = None  # 0 = Sunday ... 6 = Saturday, as in cron
    day_of_month: int | None = None  # 1..28


def from_simple(simple: Simple) -> str:
    hour, minute = (int(part) for part in simple.schedule_time.split(":"))
    if simple.schedule_type == "daily":
        return f"{minute} {hour} * * *"
    if simple.schedule_type == "weekly":
        return f"{minute} {hour} * * {simple.day_of_week if simple.day_of_week is not None else 0}"
    return f"{minute} {hour} {simple.day_of_month or 1} * *"


def to_simple(expr: str) -> Simple | None:
    """Seed 000's view of a cron expression, when it has one."""
    minute, hour, dom, month, dow = expr.split()
    if not (_NUMBER.match(minute) and _NUMBER.match(hour)) or month != "*":
        return None
    at = f"{int(hour):02d}:{int(minute):02d}"
    if dom == "*" and dow == "*":
        return Simple("daily", at)
    if dom == "*" and _WEEKDAY.match(dow):
        return Simple("weekly", at, day_of_week=int(dow))
    if _DAY.match(dom) and dow == "*":
        return Simple("monthly", at, day_of_month=int(dom))
    return None
