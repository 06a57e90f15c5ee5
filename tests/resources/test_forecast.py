"""Capacity forecasts against synthetic series with known answers."""

from __future__ import annotations

import pytest

from opscenter.resources.forecast import forecast, since_last_drop

HOUR = 3600
DAY = 86400
T0 = 1_800_000_000


def series(days: float, start: float, per_day: float, every: int = HOUR) -> list[tuple[int, float]]:
    return [(T0 + t, start + per_day * t / DAY) for t in range(0, int(days * DAY) + 1, every)]


def test_linear_fill_gives_the_exact_days_left() -> None:
    # 100 GB disk, 40 GB used, +2 GB a day for 10 days: 60 GB used now, 20 days left.
    points = series(10, 40e9, 2e9)
    now = points[-1][0]
    result = forecast(points, 100e9, now)
    assert result.growth_per_day == pytest.approx(2e9)
    assert result.days_left == pytest.approx(20.0)
    assert result.confidence == "high"
    assert result.since == T0


def test_fill_after_a_cleanup_drop_uses_only_the_trend_since_the_drop() -> None:
    # Growing fast (5 GB/day) for 5 days, a cleanup back to 10 GB, then 1 GB/day for 6 days.
    before = series(5, 30e9, 5e9)
    after = [(t + 5 * DAY + HOUR, v) for t, v in series(6, 10e9, 1e9)]
    points = before + after
    assert since_last_drop(points, 100e9) == len(before)
    now = points[-1][0]
    result = forecast(points, 100e9, now)
    assert result.growth_per_day == pytest.approx(1e9)
    assert result.days_left == pytest.approx(84.0)  # (100 - 16) GB at 1 GB a day
    assert result.since == after[0][0]


def test_flat_series_never_fills() -> None:
    points = series(7, 50e9, 0.0)
    result = forecast(points, 100e9, points[-1][0])
    assert result.days_left is None
    assert result.growth_per_day == pytest.approx(0.0)


def test_one_spike_barely_moves_the_robust_trend() -> None:
    points = series(10, 40e9, 2e9)
    t, v = points[100]
    points[100] = (t, v + 40e9)  # a temporary file, gone an hour later
    result = forecast(points, 100e9, points[-1][0])
    assert result.days_left == pytest.approx(20.0, rel=0.01)


def test_too_little_history_says_so() -> None:
    result = forecast([(T0, 1.0), (T0 + 60, 2.0)], 100.0, T0 + 60)
    assert result.days_left is None and result.confidence == "insufficient"
