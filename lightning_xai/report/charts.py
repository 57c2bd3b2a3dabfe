"""Line charts as inline SVG for the report: axes with ticks, a legend, dashed thresholds, circled alerts."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALERT_COLOUR", "PALETTE", "Series", "svg_chart"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
ALERT_COLOUR = "#d62728"


@dataclass
class Series:
    """One line (or marker set) of a chart."""

    name: str
    points: Sequence[tuple[float, float]]
    colour: str = PALETTE[0]
    dashed: bool = False
    markers_only: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(first, last + 1)]


def svg_chart(title: str, series: Sequence[Series], xlabel: str = "epoch", width: int = 520, height: int = 240) -> str:
    """A line chart as inline SVG: axes with ticks, a legend, dashed lines for thresholds, dots for alerts.

    Example::

        >>> svg = svg_chart("drift", [Series("watched", [(0, 0.1), (1, 0.3)])])
        >>> svg.startswith("<svg") and "watched" in svg and "polyline" in svg
        True
    """
    points = [p for s in series for p in s.points if math.isfinite(p[1])]
    if not points:
        return ""
    left, right, top = 52, 14, 28
    shown = [s for s in series if any(math.isfinite(p[1]) for p in s.points)]
    legend, x_at, row = [], float(left), 0
    for s in shown:  # legend entries, wrapped onto as many lines as they need
        need = 30 + 6.5 * len(s.name)
        if x_at + need > width - right and x_at > left:
            x_at, row = float(left), row + 1
        legend.append((s, x_at, row))
        x_at += need
    bottom = 44 + 16 * (row + 1)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    y_lo, y_hi = min(0.0, min(ys)), max(ys)
    y_ticks = _ticks(y_lo, y_hi if y_hi > y_lo else y_lo + 1.0)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    height += 16 * row  # room for the extra legend lines
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y_lo) / (y_hi - y_lo) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="svgchart" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="17" font-size="13" font-weight="600">{html.escape(title)}</text>',
    ]
    for t in y_ticks:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" font-size="11" text-anchor="end">{t:g}</text>')
    x_ticks = [t for t in _ticks(x_lo, x_hi, 8) if x_lo <= t <= x_hi]
    if xlabel == "epoch":
        x_ticks = [t for t in x_ticks if float(t).is_integer()]
    for t in x_ticks:
        out.append(f'<text x="{sx(t):.1f}" y="{top + ph + 15}" font-size="11" text-anchor="middle">{t:g}</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#999"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="#999"/>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 30}" font-size="11" text-anchor="middle">{xlabel}</text>')
    for s, lx, row in legend:
        pts = sorted(p for p in s.points if math.isfinite(p[1]))
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        if s.markers_only:
            for x, y in pts:
                out.append(
                    f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5.5" fill="none" stroke="{s.colour}" '
                    f'stroke-width="2.5"><title>{html.escape(s.name)}: epoch {x:g}, {y:.3g}</title></circle>'
                )
        else:
            dash = ' stroke-dasharray="6 4"' if s.dashed else ""
            out.append(f'<polyline points="{coords}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>')
            for x, y in pts:
                out.append(
                    f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{s.colour}">'
                    f"<title>{html.escape(s.name)}: {xlabel} {x:g}, {y:.4g}</title></circle>"
                )
        ly = top + ph + 50 + 16 * row
        mark = (
            f'<circle cx="{lx + 8}" cy="{ly - 4}" r="4.5" fill="none" stroke="{s.colour}" stroke-width="2"/>'
            if s.markers_only
            else f'<line x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{s.colour}" stroke-width="2"'
            + (' stroke-dasharray="5 3"' if s.dashed else "")
            + "/>"
        )
        out.append(mark)
        out.append(f'<text x="{lx + 22}" y="{ly}" font-size="11">{html.escape(s.name)}</text>')
    out.append("</svg>")
    return "".join(out)
