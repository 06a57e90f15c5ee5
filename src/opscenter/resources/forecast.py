"""Capacity forecasts: days until full, from the history since the last drop.

The trend is Theil-Sen (the median of the slopes between pairs of points): one spike or a
gap barely moves it, unlike a least-squares line. A drop (a cleanup, a rotated log, a
vacuum) starts a new trend, so only the points after the last one count.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from opscenter.core import stats

METHOD = "theil-sen trend over the window since the last drop"
#: A fall of more than this share of the capacity (or of the largest value) is a drop.
DROP_SHARE = 0.02
DAY = 86400.0


@dataclass(frozen=True)
class Forecast:
    days_left: float | None  # None: not growing, or not enough history
    growth_per_day: float | None
    confidence: str  # high | medium | low | insufficient
    points_used: int
    since: int | None  # epoch seconds of the first point of the trend
    method: str = METHOD


def since_last_drop(points: Sequence[tuple[int, float]], capacity: float | None) -> int:
    """Index of the first point after the last drop."""
    if not points:
        return 0
    scale = capacity or max(abs(v) for _, v in points) or 1.0
    start = 0
    for i in range(1, len(points)):
        if points[i - 1][1] - points[i][1] > DROP_SHARE * scale:
            start = i
    return start


def forecast(points: Sequence[tuple[int, float]], capacity: float | None, now: int) -> Forecast:
    """Days until `capacity` is reached at the trend of `points` (epoch seconds, value)."""
    trend = list(points[since_last_drop(points, capacity) :])
    if len(trend) < 3 or trend[-1][0] - trend[0][0] < 3600:
        return Forecast(None, None, "insufficient", len(trend), trend[0][0] if trend else None)
    slope, intercept = stats.theil_sen(trend)
    growth = slope * DAY
    span = trend[-1][0] - trend[0][0]
    residuals = [abs(y - (intercept + slope * t)) for t, y in trend]
    scale = max(abs(slope) * span, (capacity or 0) * 0.001, 1e-9)
    spread = statistics.median(residuals) / scale
    if len(trend) >= 24 and span >= 2 * DAY and spread < 0.05:
        confidence = "high"
    elif len(trend) >= 6 and spread < 0.25:
        confidence = "medium"
    else:
        confidence = "low"
    days: float | None = None
    if capacity is not None and slope > 0:
        current = intercept + slope * now
        days = max(0.0, (capacity - current) / slope / DAY)
    return Forecast(days, growth, confidence, len(trend), trend[0][0])
