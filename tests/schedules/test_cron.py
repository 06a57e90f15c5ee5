"""Cron + timezone, pure: DST (one run per local date for daily schedules, at the right
UTC instants), seed 000's fields as cron, and what is refused."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from opscenter.core import cron
from opscenter.schedules.schemas import ScheduleCreate


def runs(expr: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    out, after = [], start
    while True:
        nxt = cron.next_after(expr, cron.zone(tz), after)
        assert nxt is not None and nxt.tzinfo is not None
        if nxt > end:
            return out
        out.append(nxt)
        after = nxt


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tz", "expr", "start", "end", "expected"),
    [
        # Europe/Berlin 2026: 02:00 -> 03:00 on March 29; 03:00 -> 02:00 on October 25.
        (
            "Europe/Berlin",
            "30 2 * * *",
            utc(2026, 3, 27),
            utc(2026, 3, 31),
            [
                utc(2026, 3, 27, 1, 30),
                utc(2026, 3, 28, 1, 30),
                utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: once, at 03:00 CEST
                utc(2026, 3, 30, 0, 30),
            ],
        ),
        (
            "Europe/Berlin",
            "30 2 * * *",
            utc(2026, 10, 23),
            utc(2026, 10, 27),
            [
                utc(2026, 10, 23, 0, 30),
                utc(2026, 10, 24, 0, 30),
                utc(2026, 10, 25, 0, 30),  # 02:30 happens twice: once, the first (CEST)
                utc(2026, 10, 26, 1, 30),
            ],
        ),
        # America/New_York 2026: 02:00 -> 03:00 on March 8; 02:00 -> 01:00 on November 1.
        (
            "America/New_York",
            "15 2 * * *",
            utc(2026, 3, 6, 12),
            utc(2026, 3, 10),
            [
                utc(2026, 3, 7, 7, 15),
                utc(2026, 3, 8, 7, 0),  # 03:00 EDT
                utc(2026, 3, 9, 6, 15),
            ],
        ),
        (
            "America/New_York",
            "30 1 * * *",
            utc(2026, 10, 31, 12),
            utc(2026, 11, 3),
            [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)],  # 01:30 EDT only
        ),
    ],
)
def test_daily_schedules_run_once_per_local_date_across_dst(
    tz: str, expr: str, start: datetime, end: datetime, expected: list[datetime]
) -> None:
    assert runs(expr, tz, start, end) == expected


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Australia/Sydney"])
@pytest.mark.parametrize("expr", ["30 2 * * *", "0 3 * * *", "59 1 * * *", "0 0 * * *"])
def test_a_year_of_daily_runs_is_one_per_local_date(tz: str, expr: str) -> None:
    zone = ZoneInfo(tz)
    found = runs(expr, tz, utc(2026, 1, 1), utc(2027, 1, 1))
    per_day = Counter(r.astimezone(zone).date() for r in found)
    first, last = found[0].astimezone(zone).date(), found[-1].astimezone(zone).date()
    assert (last - first).days >= 364
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    assert all(per_day[d] == 1 for d in days), [d for d in days if per_day[d] != 1]
    assert len(found) == len(days) == sum(per_day.values())
    hour, minute = int(expr.split()[1]), int(expr.split()[0])
    # Every run is at the wall-clock time, except the one in a spring-forward gap.
    off = [r.astimezone(zone) for r in found if r.astimezone(zone).time().hour != hour]
    assert len(off) <= 1 and all(o.minute == 0 for o in off)
    assert all(r.astimezone(zone).minute == minute for r in found if r.astimezone(zone) not in off)


def test_sub_daily_schedules_follow_elapsed_time_through_the_repeated_hour() -> None:
    found = runs("0 * * * *", "Europe/Berlin", utc(2026, 10, 24, 22), utc(2026, 10, 25, 4))
    assert found == [utc(2026, 10, 24, 23) + timedelta(hours=i) for i in range(6)]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"schedule_type": "daily", "schedule_time": "03:00"}, "0 3 * * *"),
        ({"schedule_type": "daily", "schedule_time": "23:59"}, "59 23 * * *"),
        ({"schedule_type": "weekly", "schedule_time": "01:30"}, "30 1 * * 0"),
        ({"schedule_type": "weekly", "schedule_time": "01:30", "day_of_week": 5}, "30 1 * * 5"),
        ({"schedule_type": "monthly", "schedule_time": "00:05"}, "5 0 1 * *"),
        ({"schedule_type": "monthly", "schedule_time": "04:00", "day_of_month": 15}, "0 4 15 * *"),
    ],
)
def test_seed000_fields_map_to_cron_and_back(fields: dict[str, object], expected: str) -> None:
    simple = cron.Simple(**fields)  # type: ignore[arg-type]
    assert cron.from_simple(simple) == expected
    back = cron.to_simple(expected)
    assert back is not None and back.schedule_type == fields["schedule_type"]
    assert back.schedule_time == fields["schedule_time"]


@pytest.mark.parametrize("expr", ["*/15 * * * *", "0 2 * * 1-5", "0 2 L * *", "0 0 1 1 *"])
def test_custom_cron_has_no_seed000_view(expr: str) -> None:
    assert cron.to_simple(cron.normalize(expr)) is None


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "5 fields"),
        ("0 0 * * * *", "5 fields"),
        ("61 * * * *", "Bad minute"),
        ("0 24 * * *", "Bad hour"),
        ("0 0 31 2 *", "Bad day-of-month"),
        ("0 0 * 13 *", "Bad month"),
        ("0 0 * * 8", "Bad day-of-week"),
        ("a b c d e", "invalid cron expression"),
        ("*/0 * * * *", "Bad minute"),
        ("", "5 fields"),
    ],
)
def test_invalid_cron_is_refused_with_a_clear_message(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cron.normalize(expr)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "localtime", "../etc/passwd", "utc+2"])
def test_unknown_timezones_are_refused(tz: str) -> None:
    with pytest.raises(ValueError, match="unknown timezone"):
        cron.zone(tz)


def test_schema_documents_the_dst_and_misfire_rules() -> None:
    doc = ScheduleCreate.model_json_schema()["description"]
    assert "spring-forward" in doc and "fall-back" in doc and "catch-up" in doc
