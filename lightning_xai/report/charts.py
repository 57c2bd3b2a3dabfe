"""Line charts as inline SVG for the report: axes with ticks, a legend, dashed thresholds, circled alerts."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ALERT_COLOUR", "PALETTE", "Series", "svg_chart"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
ALERT_COLOUR = "#d62728"


@dataclass
class Series:
    """One line (or, ``markers_only``, a set of circled points) of a chart."""

    name: str
    points: Sequence[tuple[float, float]]
    colour: str = PALETTE[0]
    dashed: bool = False
    markers_only: bool = False


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [round(k * step, 10) for k in range(math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9) + 1)]


def svg_chart(title: str, series: Sequence[Series], xlabel: str = "epoch", width: int = 520, height: int = 240) -> str:
    """A line chart as inline SVG (empty when no series has a finite point).

    Example::

        >>> svg = svg_chart("drift", [Series("watched", [(0, 0.1), (1, 0.3)])])
        >>> svg.startswith("<svg") and "watched" in svg and "polyline" in svg
        True
    """
    shown = [(s, sorted(p for p in s.points if math.isfinite(p[1]))) for s in series]
    shown = [(s, pts) for s, pts in shown if pts]
    if not shown:
        return ""
    left, right, top, ph = 52, 14, 28, height - 88
    pw = width - left - right
    legend, x_at, row = [], float(left), 0
    for s, pts in shown:  # legend entries, wrapped onto as many lines as they need
        need = 30 + 6.5 * len(s.name)
        if x_at + need > width - right and x_at > left:
            x_at, row = float(left), row + 1
        legend.append((s, pts, x_at, row))
        x_at += need
    xs, ys = [x for _, pts in shown for x, _ in pts], [y for _, pts in shown for _, y in pts]
    x_lo, x_hi = (min(xs), max(xs)) if max(xs) > min(xs) else (xs[0] - 0.5, xs[0] + 0.5)
    y_ticks = _ticks(min(0.0, min(ys)), max(ys))
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y_lo) / (y_hi - y_lo) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 16 * row}" class="svgchart" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="17" font-size="13" font-weight="600">{html.escape(title)}</text>',
    ]
    for t in y_ticks:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" font-size="11" text-anchor="end">{t:g}</text>')
    for t in _ticks(x_lo, x_hi, 8):
        if x_lo <= t <= x_hi and (xlabel != "epoch" or float(t).is_integer()):
            out.append(f'<text x="{sx(t):.1f}" y="{top + ph + 15}" font-size="11" text-anchor="middle">{t:g}</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#999"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="#999"/>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 30}" font-size="11" text-anchor="middle">{xlabel}</text>')
    for s, pts, lx, row in legend:
        name, dash = html.escape(s.name), ' stroke-dasharray="6 4"' if s.dashed else ""
        if not s.markers_only:
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{coords}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>')
        dot = (
            f'r="5.5" fill="none" stroke="{s.colour}" stroke-width="2.5"'
            if s.markers_only
            else f'r="2.5" fill="{s.colour}"'
        )
        for x, y in pts:
            tip = f"<title>{name}: {xlabel} {x:g}, {y:.4g}</title>"
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" {dot}>{tip}</circle>')
        ly = top + ph + 50 + 16 * row
        if s.markers_only:
            out.append(
                f'<circle cx="{lx + 8}" cy="{ly - 4}" r="4.5" fill="none" stroke="{s.colour}" stroke-width="2"/>'
            )
        else:
            mark = f'x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}"'
            out.append(f'<line {mark} stroke="{s.colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + 22}" y="{ly}" font-size="11">{name}</text>')
    out.append("</svg>")
    return "".join(out)
