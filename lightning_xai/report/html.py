"""One self-contained HTML page for :class:`~lightning_xai.report.read.RunLog` s, nothing fetched: inline CSS, SVG line
charts (ticks, legend, dashed thresholds, circled alerts), thumbnails as base64 WebP (JPEG without WebP). Per run: a
summary, the alerts, drift charts, evidence, a filmstrip per probe (cut out of the sheets), other curves, settings."""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_xai import _warn
from lightning_xai.report.film import FILM_TILE as FILM_TILE  # re-exported
from lightning_xai.report.film import compact, filmstrip_section
from lightning_xai.report.film import thumbnails as thumbnails  # re-exported
from lightning_xai.report.read import RunLog, read_logdir

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
    """A line chart as inline SVG (empty when no series has a finite point)."""
    shown = [(s, sorted((p for p in s.points if math.isfinite(p[1])), key=lambda p: p[0])) for s in series]
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
        hollow = f'fill="none" stroke="{s.colour}" stroke-width="2.5"'
        dot = f'r="5.5" {hollow}' if s.markers_only else f'r="2.5" fill="{s.colour}"'
        for x, y in pts:
            tip = f"<title>{name}: {xlabel} {x:g}, {y:.4g}</title>"
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" {dot}>{tip}</circle>')
        ly = top + ph + 46 + 16 * row  # the legend's mark; its text 4 px lower
        mark = f'<line x1="{lx}" x2="{lx + 18}" y1="{ly}" y2="{ly}" stroke="{s.colour}" stroke-width="2"{dash}/>'
        ring = f'<circle cx="{lx + 8}" cy="{ly}" r="4.5" fill="none" stroke="{s.colour}" stroke-width="2"/>'
        out += [ring if s.markers_only else mark, f'<text x="{lx + 22}" y="{ly + 4}" font-size="11">{name}</text>']
    out.append("</svg>")
    return "".join(out)


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
.evidence { max-width: 100%; border: 1px solid #e3e3e3; }
.note { background: #f6f8fa; padding: 8px 12px; border-radius: 4px; }
code { background: #f4f4f4; padding: 1px 4px; border-radius: 3px; }
"""
#: counts the thumbnails the browser decoded (the browser test reads ``data-sheets-loaded`` from the DOM)
SCRIPT = """<script>
var shown = document.querySelectorAll('[data-sheet]'), counts = document.body.dataset;
counts.sheetsTotal = shown.length;
shown.forEach(function (el) {
  var img = new Image();
  img.onload = function () { counts.sheetsLoaded = (+counts.sheetsLoaded || 0) + 1; };
  img.onerror = function () { counts.sheetsFailed = (+counts.sheetsFailed || 0) + 1; };
  img.src = getComputedStyle(el).backgroundImage.replace(/^url\\(["']?/, '').replace(/["']?\\)$/, '');
});
</script>
"""


def _charts(title: str, charts: Sequence[str], intro: str = "") -> str:
    shown = "".join(f'<div class="chart">{svg}</div>' for svg in charts if svg)
    return f'<h2>{title}</h2>{intro}<div class="charts">{shown}</div>' if shown else ""


def _drift_section(run: RunLog) -> str:
    several = len(set(run.evaluations)) < len(run.evaluations)
    charts = []
    for method in run.methods:
        base = f"xai/summary/{method}"
        series = [Series("watched (detector score)", run.scalars.get(f"{base}/watched", []))]
        series.append(Series("threshold", run.scalars.get(f"{base}/threshold", []), PALETTE[1], dashed=True))
        for i, tag in enumerate(sorted(t for t in run.scalars if t.startswith(f"{base}/rule_"))):
            key = tag.rsplit("/", 1)[-1].removeprefix("rule_")
            limit = key.endswith("_threshold")
            name = "rule: " + key.removesuffix("_threshold").replace("_vs_", " vs ").replace("_", " ")
            colour = PALETTE[(2 + i // 2) % len(PALETTE)]
            series.append(Series(name + (" threshold" if limit else ""), run.scalars[tag], colour, dashed=limit))
        series.append(Series("alert", run.scalars.get(f"{base}/alert", []), ALERT_COLOUR, markers_only=True))
        charts.append(svg_chart(f"{method}: watched drift, threshold, alerts", series))
        rank = [
            Series(f"vs {versus}", _measured(run, f"xai/{method}/drift/rank_vs_{versus}"), PALETTE[c])
            for versus, c in (("previous", 2), ("reference", 3))
        ]
        charts.append(svg_chart(f"{method}: rank drift (median over probes)", rank))
    intro = (
        '<p class="muted">Per method: the series the alerting watches, its threshold (dashed) and the epochs that '
        'raised an alert (<span class="alert">circles</span>); then the median rank drift (1 − Spearman of |A| over '
        "the probes) against the previous evaluation and against the reference epoch, from where there is one."
        + (" An epoch's n evaluations lie at fractions k/n of it (epoch 0 and 0.5 for two)." if several else "")
        + "</p>"
    )
    shown = _charts("Drift", charts, intro) if len(run.evaluations) > 1 else ""
    return shown or f'<h2>Drift</h2><p class="note">{html.escape(_no_drift_yet(run))}</p>'


def _measured(run: RunLog, base: str) -> list[tuple[float, float]]:
    """A drift median's points where it was measured: before there is a previous map or a reference the monitor logs
    0.0 in its place (for ``EarlyStopping``), and the median's ``share`` only with a measurement."""
    measured = {x for x, _ in run.scalars.get(f"{base}/share", [])}
    return [(x, y) for x, y in run.scalars.get(f"{base}/median", []) if x in measured]


def _no_drift_yet(run: RunLog) -> str:
    """Why a run has no drift curve yet, and from which evaluation on it will have them."""
    evaluations = run.evaluations
    if len(evaluations) > 1:
        return (
            f"{len(evaluations)} evaluations (epochs {evaluations[0]}–{evaluations[-1]}) but no drift scalar was "
            "logged: the methods may have failed at every evaluation (see the errors above), or the run logged no "
            "scalars."
        )
    reference = run.settings.get("reference_epoch")
    warmup = run.settings.get("warmup_epochs", "warmup_epochs")
    start = f"epoch {reference}" if reference is not None else f"the first evaluated epoch >= {warmup}"
    count = _warn.count(len(evaluations), "evaluation")
    when = f" (epoch {evaluations[0]})" if evaluations else ""
    return (
        f"Only {count} so far{when}: drift compares an evaluation with the previous one, so the curves start at the "
        f"second evaluation; the reference is {start}, and the detector decides after the warm-up and its "
        "calibration. Train longer, or see the filmstrips below."
    )


def _other_curves(run: RunLog) -> str:
    loc = sorted(t for t in run.scalars if t.startswith("xai/localization/"))
    localisation = []
    for metric in sorted({t.rsplit("/", 1)[-1] for t in loc}):
        tags = [t for t in loc if t.endswith("/" + metric)]
        series = [Series(t.split("/")[2], run.scalars[t], PALETTE[i % len(PALETTE)]) for i, t in enumerate(tags)]
        localisation.append(svg_chart(f"localisation: {metric}", series))
    quality = [
        svg_chart(t.removeprefix("xai/"), [Series(t.rsplit("/", 1)[-1], run.scalars[t])])
        for t in sorted(run.scalars)
        if t.count("/") >= 2 and t.split("/")[1] in run.methods and t.split("/")[2] not in ("drift", "alert")
    ]
    seconds = [Series("seconds", run.scalars.get("xai/summary/seconds", []), PALETTE[6])]
    cost = _charts("Cost", [svg_chart("seconds per evaluation", seconds)])
    return _charts("Localisation", localisation) + _charts("Quality and cost per method", quality) + cost


def _markdown(message: str) -> str:
    """A message as logged for TensorBoard's markdown, in HTML: escaped, its `code` spans as code (no backticks)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(message))


def _run_section(run: RunLog, name: str, prefix: str) -> tuple[str, list[str], list[str]]:
    epochs, alerts, count = run.epochs, run.alerts, len(run.evaluations)
    first = f"the first at {run.when(*alerts[0][:3])}" if alerts else ""
    alerted = f'<span class="alert">{len(alerts)} alert(s), {first}</span>' if alerts else "no alert"
    span = (
        ""
        if not epochs
        else f", epoch {epochs[0]}"
        if epochs[0] == epochs[-1]
        else f", epochs {epochs[0]}–{epochs[-1]}"
    )
    methods = ", ".join(run.methods) or "–"
    skipped = f"; {len(run.errors)} skipped or uncompared map(s)" if run.errors else ""
    if run.restarts:  # what TensorBoard still shows (report/restarts.py)
        where = " and at ".join(f"step {s} (epoch {e})" for e, s in run.restarts)
        skipped += f"; resumed from a checkpoint at {where}: the abandoned run's later evaluations are left out"
    summary = f'<p class="summary">{count} evaluation(s){span}, methods {methods}; {alerted}{skipped}.</p>'
    rows = "".join(f"<tr><td>{run.when(e, s, r)}</td><td>{_markdown(m)}</td></tr>" for e, s, r, m in alerts)
    errors = "".join(f"<tr><td>{run.when(e, s)}</td><td>{_markdown(m)}</td></tr>" for e, s, m in run.errors)
    parts = [
        f'<section class="run" id="{prefix}"><h1>{html.escape(name)}</h1>',
        f'<p class="muted"><code>{html.escape(str(run.path))}</code></p>{summary}<h2>Alerts</h2>',
        f"<table><tr><th>evaluation</th><th>message</th></tr>{rows}</table>"
        if alerts
        else "<p>No alert in this run.</p>",
        "<h2>Skipped or uncompared maps</h2><table><tr><th>evaluation</th><th>message</th></tr>"  # xai/errors
        f"{errors}</table>"
        if errors
        else "",
        _drift_section(run),
        "<h2>Evidence of the alerts</h2>" if run.evidence else "",
    ]
    for method, picture in run.evidence:
        data, mime = compact(picture.encoded)
        name, epoch = html.escape(method), run.when(picture.epoch, *picture.key)
        parts.append(
            f'<h3>{name} at {epoch}</h3><p class="muted">The probes that moved: the input, the map before, the '
            "map at the alert and the difference (red: relevance gained, blue: lost), with each class's region boxed "
            f'(<code>xai/{name}/alert/evidence</code>).</p><img class="evidence" '
            f'alt="evidence of the {name} alert at {epoch}" src="data:{mime};base64,{data}">'
        )
    film, styles, classes = filmstrip_section(run, prefix)
    settings = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(json.dumps(v, default=str))}</code></td></tr>"
        for k, v in run.settings.items()
    )
    parts += [film, _other_curves(run), f"<h2>Settings</h2><table>{settings}</table>" if settings else "", "</section>"]
    return "".join(parts), styles, classes


def run_label(run: RunLog) -> str:
    """How the report names a run: its path under the log directory, and the name of a named monitor.

    Example::

        >>> run_label(RunLog(Path("logs/shortcut/version_1"), label="shortcut/version_1", name="a"))
        'shortcut/version_1 (monitor a)'
    """
    label = run.label or run.path.name
    return label if run.name is None else f"{label} (monitor {run.name})"


def render_report(runs: Sequence[RunLog], title: str = "lightning-xai report") -> str:
    """The whole page for one or more runs.

    Example::

        >>> page = render_report([])
        >>> page.startswith("<!DOCTYPE html>") and "No run" in page
        True
    """
    bodies, styles, checks = [], [], []
    if not runs:
        bodies.append(f"<h1>{html.escape(title)}</h1><p>No run with TensorBoard event files was found.</p>")
    if len(runs) > 1:
        items = "".join(
            f'<li><a href="#r{i}">{html.escape(run_label(run))}</a>'
            + (f' <span class="alert">{len(run.alerts)} alert(s)</span>' if run.alerts else "")
            + "</li>"
            for i, run in enumerate(runs)
        )
        bodies.append(f'<h1>{html.escape(title)}</h1><p>{len(runs)} runs:</p><ul class="runs">{items}</ul>')
    for i, run in enumerate(runs):
        body, style, classes = _run_section(run, f"{title}: {run_label(run)}", f"r{i}")
        bodies.append(body)
        styles += style
        checks += [f'<div class="{c}" data-sheet hidden></div>' for c in classes]  # for the load check
    head = f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
    css = "<style>" + CSS + "\n".join(styles) + "</style></head><body>"
    return head + css + "".join(bodies) + "".join(checks) + SCRIPT + "</body></html>\n"


def write_report(
    logdir: str, out: str, title: str = "lightning-xai report", runs: list[RunLog] | None = None
) -> list[RunLog]:
    """Read every run under ``logdir`` (unless given its ``runs``) and write the page to ``out`` (its directory
    created); returns the runs."""
    runs = read_logdir(logdir) if runs is None else runs
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(render_report(runs, title), encoding="utf-8")
    return runs
