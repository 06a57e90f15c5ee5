"""Small robust statistics from the standard library: median and MAD for anomaly scores,
Theil-Sen for trends, and a prediction interval from the residuals around the trend.

Theil-Sen (the median of the slopes between pairs of points) barely moves for one spike or
a gap, unlike a least-squares line; MAD (the median absolute deviation) is to the median
what the standard deviation is to the mean, without being dragged by the outliers it is
meant to find."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

#: Pairs are taken among at most this many evenly spread points (quadratic otherwise).
MAX_POINTS = 200
#: MAD times this estimates the standard deviation of normally distributed data.
MAD_TO_SIGMA = 1.4826
#: Two-sided 95 % of the normal distribution.
Z95 = 1.959964


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def mad(values: Sequence[float], center: float | None = None) -> float:
    """The median absolute deviation from `center` (the median by default)."""
    mid = median(values) if center is None else center
    return median([abs(v - mid) for v in values])


def robust_sigma(spread: float, floor: float) -> float:
    """The robust standard deviation (1.4826 MAD) of a series whose MAD is `spread`.

    `floor` bounds it from below: a perfectly regular series (MAD 0) would otherwise call
    the smallest wobble infinitely unusual."""
    return max(MAD_TO_SIGMA * spread, floor)


def robust_z(value: float, center: float, spread: float, floor: float) -> float:
    """How many robust standard deviations `value` is from `center`."""
    return (value - center) / robust_sigma(spread, floor)


def spread_points(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return list(points)
    step = (len(points) - 1) / (MAX_POINTS - 1)
    return [points[round(i * step)] for i in range(MAX_POINTS)]


def theil_sen(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(slope per unit of x, intercept) of the median line through (x, y) points."""
    pts = spread_points(points)
    slopes = [
        (y2 - y1) / (x2 - x1)
        for i, (x1, y1) in enumerate(pts)
        for x2, y2 in pts[i + 1 :]
        if x2 != x1
    ]
    slope = median(slopes) if slopes else 0.0
    intercept = median([y - slope * x for x, y in pts])
    return slope, intercept


def interval_half_width(
    points: Sequence[tuple[float, float]], slope: float, intercept: float
) -> float:
    """Half the width of a 95 % prediction interval around the line: the residuals' MAD
    as a robust standard deviation, times 1.96."""
    residuals = [y - (intercept + slope * x) for x, y in points]
    return Z95 * MAD_TO_SIGMA * mad(residuals, 0.0) if residuals else 0.0
