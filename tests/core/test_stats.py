"""The robust statistics against figures worked out by hand."""

from __future__ import annotations

import pytest

from opscenter.core import stats


def test_median_and_mad() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    assert stats.median(values) == 3.0
    # deviations from 3: 2, 1, 0, 1, 97 -> median 1
    assert stats.mad(values) == 1.0


def test_robust_z_uses_the_floor_for_a_flat_series() -> None:
    assert stats.robust_z(50.0, 100.0, 0.0, floor=5.0) == -10.0
    assert stats.robust_z(104.0, 100.0, 2.0, floor=1.0) == pytest.approx(4 / (2 * 1.4826))


def test_theil_sen_ignores_one_spike() -> None:
    points = [(float(x), 2.0 * x + 1) for x in range(10)]
    points[4] = (4.0, 500.0)
    slope, intercept = stats.theil_sen(points)
    assert slope == pytest.approx(2.0)
    assert intercept == pytest.approx(1.0)


def test_interval_from_the_residuals() -> None:
    # residuals around y = x: 0, +1, -1, 0, +2 -> |r| 0, 1, 1, 0, 2 -> MAD 1
    points = [(0.0, 0.0), (1.0, 2.0), (2.0, 1.0), (3.0, 3.0), (4.0, 6.0)]
    assert stats.interval_half_width(points, 1.0, 0.0) == pytest.approx(1.959964 * 1.4826)
