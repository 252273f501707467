"""Server-rendered SVG for the monitoring page: a rate over time per model version, each day a
point with its Wilson interval as a whisker (readable without script, like the audit chart)."""

from __future__ import annotations

import math
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
LEFT, TOP, WIDTH, HEIGHT, BOTTOM, RIGHT = 52, 30, 470, 220, 40, 110


def rate_chart_svg(title: str, days: list[str], series: dict[str, dict[str, dict]]) -> str:
    """``series``: {model_version: {day key: point}}, a point as the metrics API gives it."""
    highest = 0.0
    for points in series.values():
        for p in points.values():
            highest = max(highest, p.get("ci_high") or 0.0, p.get("value") or 0.0)
    top = min(1.0, max(0.01, math.ceil(highest * 20 + 1e-9) / 20))
    step_x = WIDTH / max(1, len(days) - 1) if len(days) > 1 else 0

    def x(i: int) -> float:
        return round(LEFT + (i * step_x if len(days) > 1 else WIDTH / 2), 1)

    def y(v: float) -> float:
        return round(TOP + HEIGHT * (1 - min(v, top) / top), 1)

    total_w, total_h = LEFT + WIDTH + RIGHT, TOP + HEIGHT + BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
        f'viewBox="0 0 {total_w} {total_h}" role="img" aria-label="{escape(title)}" '
        'font-family="sans-serif" font-size="12" class="rate-chart">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="16" font-weight="bold">{escape(title)}</text>',
    ]
    ticks = 5
    for i in range(ticks + 1):
        v = top * i / ticks
        parts.append(
            f'<line x1="{LEFT}" y1="{y(v)}" x2="{LEFT + WIDTH}" y2="{y(v)}" stroke="#e0e0e0"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(v) + 4}" text-anchor="end" fill="#666">'
            f"{100 * v:.1f}%</text>"
        )
    label_every = max(1, math.ceil(len(days) / 7))
    for i, day in enumerate(days):
        if i % label_every == 0 or i == len(days) - 1:
            parts.append(
                f'<text x="{x(i)}" y="{TOP + HEIGHT + 16}" text-anchor="middle" fill="#666">'
                f"{escape(day[5:10])}</text>"
            )
    for n, (version, points) in enumerate(sorted(series.items())):
        colour = COLOURS[n % len(COLOURS)]
        offset = (n - (len(series) - 1) / 2) * 3  # whiskers of versions side by side
        path = []
        parts.append(f'<g class="version" data-version="{escape(version)}">')
        for i, day in enumerate(days):
            p = points.get(day)
            if not p or p.get("value") is None:
                continue
            cx = round(x(i) + offset, 1)
            path.append(f"{cx},{y(p['value'])}")
            tip = (
                f"{version} {day[:10]}: {100 * p['value']:.2f}% "
                f"[{100 * p['ci_low']:.2f}, {100 * p['ci_high']:.2f}] "
                f"({p['numerator']:g}/{p['denominator']:g})"
            )
            parts.append(
                f'<line x1="{cx}" y1="{y(p["ci_low"])}" x2="{cx}" y2="{y(p["ci_high"])}" '
                f'stroke="{colour}" stroke-width="2" opacity="0.45"><title>{escape(tip)}</title>'
                "</line>"
            )
            parts.append(
                f'<circle cx="{cx}" cy="{y(p["value"])}" r="3" fill="{colour}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        if len(path) > 1:
            parts.append(
                f'<polyline points="{" ".join(path)}" fill="none" stroke="{colour}" '
                'stroke-width="1.5"/>'
            )
        parts.append("</g>")
        ly = TOP + 14 + 18 * n
        parts.append(
            f'<rect x="{LEFT + WIDTH + 16}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{LEFT + WIDTH + 32}" y="{ly}">{escape(version or "(none)")}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
