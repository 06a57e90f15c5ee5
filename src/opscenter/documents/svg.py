"""Charts as inline SVG: axes, bars or lines, labels and a legend, all as SVG text, so a
PDF made from them keeps the figures as searchable text."""

from __future__ import annotations

from html import escape

from opscenter.documents.model import Chart

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 28, 56
COLORS = ("#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#c62828", "#00838f", "#5d4037")
#: At most this many x labels are written; the others are skipped (every n-th is kept).
MAX_LABELS = 16
TICKS = 4


def _number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}" if value == int(value) else f"{value:.2f}"


def _nice_max(top: float) -> float:
    """A round axis maximum at or above `top` (1, 2 or 5 times a power of ten)."""
    if top <= 0:
        return 1.0
    scale = 10.0 ** (len(str(int(top))) - 1)
    for step in (1, 2, 5, 10):
        if step * scale >= top:
            return step * scale
    return 10 * scale


def render(chart: Chart) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for s in chart.series for v in s.values]
    top = _nice_max(max(values, default=0.0))
    n = max(len(chart.labels), 1)
    slot = plot_w / n

    def y(v: float) -> float:
        return TOP + plot_h - max(v, 0.0) / top * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10">',
        f'<text x="{LEFT}" y="14" font-size="12" font-weight="bold">{escape(chart.title)}'
        f"{escape(f' ({chart.unit})') if chart.unit else ''}</text>",
    ]
    for i in range(TICKS + 1):
        v = top * i / TICKS
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#ddd" stroke-width="0.5"/>'
            f'<text x="{LEFT - 4}" y="{y(v) + 3:.1f}" text-anchor="end">{_number(v)}</text>'
        )
    every = -(-len(chart.labels) // MAX_LABELS) or 1
    for i, label in enumerate(chart.labels):
        if i % every:
            continue
        x = LEFT + slot * (i + 0.5)
        parts.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 12}" text-anchor="end" '
            f'transform="rotate(-35 {x:.1f} {TOP + plot_h + 12})">{escape(label[:18])}</text>'
        )
    count = max(len(chart.series), 1)
    for k, series in enumerate(chart.series):
        color = COLORS[k % len(COLORS)]
        if chart.kind == "bar":
            width = slot * 0.8 / count
            for i, v in enumerate(series.values):
                x = LEFT + slot * i + slot * 0.1 + width * k
                parts.append(
                    f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{width:.1f}" '
                    f'height="{TOP + plot_h - y(v):.1f}" fill="{color}"/>'
                )
        else:
            points = " ".join(
                f"{LEFT + slot * (i + 0.5):.1f},{y(v):.1f}" for i, v in enumerate(series.values)
            )
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>'
            )
        lx = LEFT + k * 120
        parts.append(
            f'<rect x="{lx}" y="{HEIGHT - 12}" width="9" height="9" fill="{color}"/>'
            f'<text x="{lx + 12}" y="{HEIGHT - 4}">{escape(series.name[:18])}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#555"/>'
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
        'stroke="#555"/></svg>'
    )
    return "".join(parts)
