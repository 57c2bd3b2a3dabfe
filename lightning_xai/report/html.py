"""Render a :class:`~lightning_xai.report.read.RunLog` as one self-contained HTML page: inline CSS, SVG charts and
the filmstrips' thumbnails as base64 WebP (JPEG where Pillow has no WebP), no script or file fetched from anywhere.

Sections: a summary line, the alerts, the drift charts per method (the watched series with its threshold and the
alerts marked, and the rank drift against the previous evaluation and the reference), a filmstrip per probe across
epochs (cut out of the explanation sheets), localisation and quality curves when the run logged them, the cost,
and the run's settings.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from typing import Any

from lightning_xai.report.charts import ALERT_COLOUR, PALETTE, Series, svg_chart
from lightning_xai.report.read import RunLog
from lightning_xai.report.thumbs import FILM_TILE, compact, thumbnail_format, thumbnails
from lightning_xai.visualize.sheet import SheetLayout, sheet_layout

__all__ = ["Series", "render_report", "run_label", "svg_chart", "thumbnails"]


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
    if any(charts) and len(run.evaluations) > 1:
        parts.append('<div class="charts">' + "".join(charts) + "</div>")
    else:
        parts.append(f'<p class="note">{html.escape(_no_drift_yet(run))}</p>')
    return "".join(parts)


def _no_drift_yet(run: RunLog) -> str:
    """Why a run has no drift curve yet, and from which evaluation on it will have them.

    Example::

        >>> from pathlib import Path
        >>> _no_drift_yet(RunLog(Path("x"), scalars={"xai/summary/seconds": [(0, 0.1)]}))[:60]
        'Only 1 evaluation so far (epoch 0): drift compares an evalua'
    """
    evaluations = run.evaluations
    warmup = run.settings.get("warmup_epochs", "warmup_epochs")
    reference = run.settings.get("reference_epoch")
    start = f"epoch {reference}" if reference is not None else f"the first evaluated epoch >= {warmup}"
    if len(evaluations) <= 1:
        count = f"{len(evaluations)} evaluation" + ("" if len(evaluations) == 1 else "s")
        when = f" (epoch {evaluations[0]})" if evaluations else ""
        return (
            f"Only {count} so far{when}: drift compares an evaluation with the previous one, so the curves start at "
            f"the second evaluation; the reference is {start}, and the detector decides after the warm-up and its "
            "calibration. Train longer, or see the filmstrips below."
        )
    return (
        f"{len(evaluations)} evaluations (epochs {evaluations[0]}–{evaluations[-1]}) but no drift scalar was logged: "
        "the methods may have failed at every evaluation (see the errors above), or the run logged no scalars."
    )


def _layout_for(run: RunLog, width: int, height: int) -> SheetLayout | None:
    """The sheet geometry (:func:`~lightning_xai.visualize.sheet.sheet_layout`, the renderer's own) for the run's
    tile size and probes, with as many method columns as the image is wide (a method skipped at an evaluation is
    not on that sheet); None when no geometry gives the image's size."""
    tile = int(run.settings.get("tile_size", 128))
    rows = [len(v) for v in run.predictions.values()]
    probes = int(run.settings.get("num_probes") or (max(rows) if rows else 0))
    one, two = sheet_layout(probes, 1, tile), sheet_layout(probes, 2, tile)
    step = two.width - one.width  # one more method column
    methods = 1 + (width - one.width) // step if step > 0 and width >= one.width else 0
    layout = sheet_layout(probes, max(0, methods), tile)
    return layout if (layout.width, layout.height) == (width, height) else None


def _filmstrip_section(run: RunLog, prefix: str) -> tuple[str, list[str], list[str]]:
    """The filmstrips, the CSS rules that hold the thumbnails (one image per evaluation, each embedded once) and
    their class names. The input column is packed once, with the first evaluation (the probes are fixed)."""
    if not run.sheets:
        return "", [], []
    usable: list[tuple[int, Any, SheetLayout]] = []
    for i, sheet in enumerate(run.sheets):
        layout = _layout_for(run, sheet.width, sheet.height)
        if layout is not None:
            usable.append((i, sheet, layout))
    if not usable:
        return "", [], []
    _, mime = thumbnail_format()
    styles, classes = [], []
    first = usable[0][0]
    for i, sheet, layout in usable:
        packed = list(range(len(layout.columns))) if i == first else list(range(1, len(layout.columns)))
        data = base64.b64encode(thumbnails(sheet.png, layout, packed)).decode("ascii")
        styles.append(f".{prefix}s{i} {{ background-image: url(data:{mime};base64,{data}); }}")
        classes.append(f"{prefix}s{i}")
    methods = run.methods
    parts = [
        "<h2>Filmstrips</h2>",
        f'<p class="muted">Each probe across all {len(usable)} evaluations: the input, then each method\'s overlay '
        "(cut out of the explanation sheets, <code>xai/sheet</code>), with the prediction and each map's drift "
        "against the reference.</p>",
    ]
    widest = max(len(layout.columns) for _, _, layout in usable)
    columns = ["input"] + methods[: max(0, widest - 1)]
    probes = len(usable[-1][2].rows)
    for p in range(probes):
        last = run.predictions.get(usable[-1][1].epoch, [])
        label = last[p].get("label") if p < len(last) else None
        parts.append(f'<h3>probe #{p}{"" if label is None else f" — label {label}"}</h3><div class="film"><table>')
        parts.append("<tr><th></th>" + "".join(f"<th>epoch {s.epoch}</th>" for _, s, _ in usable) + "</tr>")
        for c, name in enumerate(columns):
            cells = [f'<th style="text-align:right">{html.escape(name)}</th>']
            for i, sheet, layout in usable:
                if c >= len(layout.columns) or p >= len(layout.rows):
                    cells.append("<td></td>")
                    continue
                source = first if c == 0 else i
                x = FILM_TILE * (c if source == first else c - 1)
                tile = (
                    f'<div class="tile {prefix}s{source}" style="background-position:-{x}px -{p * FILM_TILE}px"></div>'
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


def _evidence_section(run: RunLog) -> str:
    """Each alert's evidence image (``xai/<method>/alert/evidence``), re-encoded compactly."""
    parts = ["<h2>Evidence of the alerts</h2>"] if run.evidence else []
    for method, picture in run.evidence:
        data, mime = compact(picture.png)
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(
            f"<h3>{html.escape(method)} at epoch {picture.epoch}</h3>"
            '<p class="muted">The probes that moved: the input, the map before, the map at the alert and the '
            "difference (red: relevance gained, blue: lost), with each class's region boxed "
            f"(<code>xai/{html.escape(method)}/alert/evidence</code>).</p>"
            f'<img class="evidence" alt="evidence of the {html.escape(method)} alert at epoch {picture.epoch}" '
            f'src="data:{mime};base64,{encoded}">'
        )
    return "".join(parts)


def _run_section(run: RunLog, name: str, prefix: str) -> tuple[str, list[str], list[str]]:
    epochs = run.epochs
    first = f", the first at epoch {run.alerts[0][0]}" if run.alerts else ""
    summary = (
        f'<p class="summary">{len(run.evaluations)} evaluation(s)'
        + (f", epochs {epochs[0]}–{epochs[-1]}" if epochs else "")
        + f", methods {', '.join(run.methods) or '–'}; "
        + (f'<span class="alert">{len(run.alerts)} alert(s){first}</span>' if run.alerts else "no alert")
        + (f"; {len(run.errors)} skipped or uncompared map(s)" if run.errors else "")
        + ".</p>"
    )
    film, styles, classes = _filmstrip_section(run, prefix)
    body = (
        f'<section class="run" id="{prefix}"><h1>{html.escape(name)}</h1><p class="muted"><code>'
        f"{html.escape(str(run.path))}</code></p>"
        f"{summary}{_alerts_section(run)}{_drift_section(run)}{_evidence_section(run)}{film}{_other_curves(run)}{_settings_section(run)}"
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


def run_label(run: RunLog) -> str:
    """How the report names a run: its path under the log directory (``run.label``, else the directory's name),
    and the monitor's name for a named monitor.

    Example::

        >>> from pathlib import Path
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
    bodies: list[str] = []
    styles: list[str] = []
    checks: list[str] = []
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
    if not runs:
        bodies.append(f"<h1>{html.escape(title)}</h1><p>No run with TensorBoard event files was found.</p>")
    head = f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
    css = "<style>" + CSS + "\n".join(styles) + "</style></head><body>"
    return head + css + "".join(bodies) + "".join(checks) + SCRIPT + "</body></html>\n"
