"""Render a :class:`~lightning_xai.report.read.RunLog` as one self-contained HTML page: inline CSS, SVG charts and
the sheets as base64 PNGs, no script or file fetched from anywhere.

Sections: a summary line, the alerts, the drift charts per method (the watched series with its threshold and the
alerts marked, and the rank drift against the previous evaluation and the reference), a filmstrip per probe across
epochs (cut out of the explanation sheets), localisation and quality curves when the run logged them, the cost,
and the run's settings.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_xai.report.read import RunLog
from lightning_xai.visualize.sheet import SheetLayout, sheet_layout

__all__ = ["Series", "render_report", "svg_chart"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
ALERT_COLOUR = "#d62728"
FILM_TILE = 96  # pixels per filmstrip tile on the page

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px;
       color: #1a1a1a; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.muted { color: #666; } .alert { color: #d62728; font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.chart { border: 1px solid #e3e3e3; border-radius: 6px; padding: 6px; background: #fff; }
table { border-collapse: collapse; margin: 6px 0; } td, th { padding: 3px 8px; border-bottom: 1px solid #eee;
       text-align: left; vertical-align: top; }
.film { overflow-x: auto; padding-bottom: 6px; } .film table td { padding: 2px; border: none; text-align: center; }
.film th { font-weight: 500; font-size: 12px; color: #555; text-align: center; }
.tile { width: 96px; height: 96px; background-repeat: no-repeat; image-rendering: auto; border-radius: 2px; }
.cap { font-size: 11px; color: #333; } .cap.bad { color: #d62728; font-weight: 600; }
code { background: #f4f4f4; padding: 1px 4px; border-radius: 3px; }
"""


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


def _chart_div(svg: str) -> str:
    return f'<div class="chart">{svg}</div>' if svg else ""


def _drift_section(run: RunLog) -> str:
    parts = ["<h2>Drift</h2>"]
    parts.append(
        '<p class="muted">Per method: the series the alerting watches, its threshold (dashed) and the epochs that '
        'raised an alert (<span class="alert">circles</span>); then the median rank drift (1 − Spearman of |A| over '
        "the probes) against the previous evaluation and against the reference epoch.</p>"
    )
    charts = []
    for method in run.methods:
        series: list[Series] = []
        base = f"xai/summary/{method}"
        watched = run.scalars.get(f"{base}/watched") or run.scalars.get(f"xai/{method}/alert/score", [])
        threshold = run.scalars.get(f"{base}/threshold") or run.scalars.get(f"xai/{method}/alert/threshold", [])
        if watched:
            series.append(Series("watched (detector score)", watched, PALETTE[0]))
        if threshold:
            series.append(Series("threshold", threshold, PALETTE[1], dashed=True))
        for i, tag in enumerate(sorted(t for t in run.scalars if t.startswith(f"{base}/rule_"))):
            key = tag.rsplit("/", 1)[-1].removeprefix("rule_")
            limit = key.endswith("_threshold")
            name = "rule: " + key.removesuffix("_threshold").replace("_vs_", " vs ").replace("_", " ")
            colour = PALETTE[(2 + i // 2) % len(PALETTE)]
            series.append(Series(name + (" threshold" if limit else ""), run.scalars[tag], colour, dashed=limit))
        alerts = run.scalars.get(f"{base}/alert", [])
        if not alerts:  # an older run: mark the alert epochs on the watched series
            by_epoch = dict(watched)
            alerts = [(e, by_epoch[e]) for e, m in run.alerts if method in m and e in by_epoch]
        if alerts:
            series.append(Series("alert", alerts, ALERT_COLOUR, markers_only=True))
        charts.append(_chart_div(svg_chart(f"{method}: watched drift, threshold, alerts", series)))
        rank = [
            Series("vs previous", run.scalars.get(f"xai/{method}/drift/rank_vs_previous/median", []), PALETTE[2]),
            Series("vs reference", run.scalars.get(f"xai/{method}/drift/rank_vs_reference/median", []), PALETTE[3]),
        ]
        charts.append(_chart_div(svg_chart(f"{method}: rank drift (median over probes)", rank)))
    parts.append('<div class="charts">' + "".join(charts) + "</div>")
    return "".join(parts)


def _layout_for(run: RunLog, width: int, height: int) -> SheetLayout | None:
    """The sheet geometry whose size matches the image (the number of methods that ran may vary)."""
    tile = int(run.settings.get("tile_size", 128))
    rows = [len(v) for v in run.predictions.values()]
    probes = int(run.settings.get("num_probes") or (max(rows) if rows else 0))
    for methods in range(0, 9):
        layout = sheet_layout(probes, methods, tile)
        if (layout.width, layout.height) == (width, height):
            return layout
    return None


def _filmstrip_section(run: RunLog, prefix: str) -> tuple[str, list[str], list[str]]:
    """The filmstrips, the CSS rules that hold the sheets (each sheet embedded once) and their class names."""
    if not run.sheets:
        return "", [], []
    styles, usable, classes = [], [], []
    for i, sheet in enumerate(run.sheets):
        layout = _layout_for(run, sheet.width, sheet.height)
        if layout is None:
            continue
        data = base64.b64encode(sheet.png).decode("ascii")
        styles.append(f".{prefix}s{i} {{ background-image: url(data:image/png;base64,{data}); }}")
        classes.append(f"{prefix}s{i}")
        usable.append((i, sheet, layout))
    if not usable:
        return "", [], []
    methods = run.methods
    parts = [
        "<h2>Filmstrips</h2>",
        '<p class="muted">Each probe across the evaluated epochs: the input, then each method\'s overlay (cut out of '
        "the explanation sheets, <code>xai/sheet</code>), with the prediction and each map's drift against the "
        "reference.</p>",
    ]
    probes = len(usable[-1][2].rows)
    scale = FILM_TILE / usable[-1][2].tile
    for p in range(probes):
        last = run.predictions.get(usable[-1][1].epoch, [])
        label = last[p].get("label") if p < len(last) else None
        parts.append(f'<h3>probe #{p}{"" if label is None else f" — label {label}"}</h3><div class="film"><table>')
        parts.append("<tr><th></th>" + "".join(f"<th>epoch {s.epoch}</th>" for _, s, _ in usable) + "</tr>")
        columns = ["input"] + [m for m in methods][: max(0, len(usable[-1][2].columns) - 1)]
        for c, name in enumerate(columns):
            cells = [f'<th style="text-align:right">{html.escape(name)}</th>']
            for i, sheet, layout in usable:
                if c >= len(layout.columns) or p >= len(layout.rows):
                    cells.append("<td></td>")
                    continue
                x, y = layout.columns[c] * scale, layout.rows[p] * scale
                size = f"{layout.width * scale:.1f}px {layout.height * scale:.1f}px"
                tile = (
                    f'<div class="tile {prefix}s{i}" style="background-size:{size};background-position:-{x:.1f}px '
                    f'-{y:.1f}px"></div>'
                )
                row = run.predictions.get(sheet.epoch, [])
                info = row[p] if p < len(row) else {}
                if c == 0:
                    wrong = info.get("label") is not None and info.get("predicted") != info.get("label")
                    conf = info.get("confidence")
                    text = f"pred {info.get('predicted', '?')}" + ("" if conf is None else f" ({conf:.2f})")
                    cap = f'<div class="cap{" bad" if wrong else ""}">{text}</div>'
                else:
                    drift = info.get(f"{name} drift")
                    threshold = run.settings.get("probe_threshold")
                    bad = drift is not None and threshold is not None and drift > threshold
                    shown = "–" if drift is None else f"{drift:.2f}"
                    cap = f'<div class="cap{" bad" if bad else ""}">drift {shown}</div>'
                cells.append(f"<td>{tile}{cap}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table></div>")
    return "".join(parts), styles, classes


def _other_curves(run: RunLog) -> str:
    loc = sorted(t for t in run.scalars if t.startswith("xai/localization/"))
    quality = sorted(
        t
        for t in run.scalars
        if t.count("/") >= 2
        and t.split("/")[1] in run.methods
        and t.split("/")[2] not in ("drift", "alert")
        and not t.startswith("xai/summary/")
    )
    parts = []
    if loc:
        metrics = sorted({t.rsplit("/", 1)[-1] for t in loc})
        charts = []
        for metric in metrics:
            series = [
                Series(t.split("/")[2], run.scalars[t], PALETTE[i % len(PALETTE)])
                for i, t in enumerate(x for x in loc if x.endswith("/" + metric))
            ]
            charts.append(_chart_div(svg_chart(f"localisation: {metric}", series)))
        parts.append('<h2>Localisation</h2><div class="charts">' + "".join(charts) + "</div>")
    if quality:
        charts = [
            _chart_div(svg_chart(t.removeprefix("xai/"), [Series(t.rsplit("/", 1)[-1], run.scalars[t])]))
            for t in quality
        ]
        parts.append('<h2>Quality and cost per method</h2><div class="charts">' + "".join(charts) + "</div>")
    seconds = run.scalars.get("xai/summary/seconds") or run.scalars.get("xai/seconds")
    if seconds:
        parts.append(
            '<h2>Cost</h2><div class="charts">'
            + _chart_div(svg_chart("seconds per evaluation", [Series("seconds", seconds, PALETTE[6])]))
            + "</div>"
        )
    return "".join(parts)


def _settings_section(run: RunLog) -> str:
    if not run.settings:
        return '<h2>Settings</h2><p class="muted">Not logged by this run (an older version of the monitor).</p>'
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(json.dumps(v, default=str))}</code></td></tr>"
        for k, v in run.settings.items()
    )
    return f"<h2>Settings</h2><table>{rows}</table>"


def _alerts_section(run: RunLog) -> str:
    if not run.alerts:
        return "<h2>Alerts</h2><p>No alert in this run.</p>"
    rows = "".join(f"<tr><td>{e}</td><td>{html.escape(m)}</td></tr>" for e, m in run.alerts)
    return f"<h2>Alerts</h2><table><tr><th>epoch</th><th>message</th></tr>{rows}</table>"


def _run_section(run: RunLog, name: str, prefix: str) -> tuple[str, list[str], list[str]]:
    epochs = run.epochs
    first = f", the first at epoch {run.alerts[0][0]}" if run.alerts else ""
    summary = (
        f'<p class="summary">{len(run.sheets)} evaluations'
        + (f", epochs {epochs[0]}–{epochs[-1]}" if epochs else "")
        + f", methods {', '.join(run.methods) or '–'}; "
        + (f'<span class="alert">{len(run.alerts)} alert(s){first}</span>' if run.alerts else "no alert")
        + (f"; {len(run.errors)} skipped or uncompared map(s)" if run.errors else "")
        + ".</p>"
    )
    film, styles, classes = _filmstrip_section(run, prefix)
    body = (
        f'<section class="run"><h1>{html.escape(name)}</h1><p class="muted"><code>{html.escape(str(run.path))}</code>'
        f"</p>{summary}{_alerts_section(run)}{_drift_section(run)}{film}{_other_curves(run)}{_settings_section(run)}"
        "</section>"
    )
    return body, styles, classes


#: counts the sheets the browser decoded (the browser test reads ``data-sheets-loaded`` from the DOM)
SCRIPT = """
<script>
(function () {
  var classes = Array.prototype.map.call(document.querySelectorAll('[data-sheet]'), function (e) { return e; });
  var loaded = 0, failed = 0, total = classes.length;
  document.body.dataset.sheetsTotal = total;
  classes.forEach(function (el) {
    var url = getComputedStyle(el).backgroundImage.replace(/^url\\(["']?/, '').replace(/["']?\\)$/, '');
    var img = new Image();
    img.onload = function () { loaded += 1; document.body.dataset.sheetsLoaded = loaded; };
    img.onerror = function () { failed += 1; document.body.dataset.sheetsFailed = failed; };
    img.src = url;
  });
})();
</script>
"""


def render_report(runs: Sequence[RunLog], title: str = "lightning-xai report") -> str:
    """The whole page for one or more runs.

    Example::

        >>> page = render_report([])
        >>> page.startswith("<!DOCTYPE html>") and "No run" in page
        True
    """
    bodies: list[str] = []
    styles: list[str] = []
    checks: list[str] = []
    for i, run in enumerate(runs):
        name = run.path.name if len(runs) == 1 else f"{i + 1}. {run.path.name}"
        body, style, classes = _run_section(run, f"{title}: {name}", f"r{i}")
        bodies.append(body)
        styles += style
        checks += [f'<div class="{c}" data-sheet hidden></div>' for c in classes]  # for the load check
    if not runs:
        bodies.append(f"<h1>{html.escape(title)}</h1><p>No run with TensorBoard event files was found.</p>")
    head = f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
    css = "<style>" + CSS + "\n".join(styles) + "</style></head><body>"
    return head + css + "".join(bodies) + "".join(checks) + SCRIPT + "</body></html>\n"
