"""The filmstrips of the report: each probe across the evaluations, its tiles cut out of the explanation sheets and
shrunk to thumbnails (base64 WebP, JPEG without WebP); at most :data:`MAX_FILM` evaluations a strip."""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from typing import Any

from PIL import Image, features

from lightning_xai.report.read import RunLog, Sheet
from lightning_xai.visualize.media import drift_column
from lightning_xai.visualize.sheet import GAP, SheetLayout, sheet_layout

FILM_TILE = 96  # pixels per filmstrip tile on the page (and in its thumbnail)
THUMB_QUALITY = 80  # WebP/JPEG quality: the demo's 10 evaluations x 10 probes x 2 methods in about 0.4 MB


def encode(picture: Image.Image) -> tuple[str, str]:
    """``(base64 text, MIME type)`` of ``picture`` as WebP where Pillow has it, else JPEG."""
    fmt, mime = ("WEBP", "image/webp") if features.check("webp") else ("JPEG", "image/jpeg")
    out = io.BytesIO()
    picture.save(out, format=fmt, quality=THUMB_QUALITY)
    return base64.b64encode(out.getvalue()).decode("ascii"), mime


def thumbnails(encoded: bytes, layout: SheetLayout, columns: Sequence[int], tile: int = FILM_TILE) -> Image.Image:
    """A sheet's tiles at ``tile`` px in one picture: a row per probe, a column per index into ``layout.columns``."""
    sheet = Image.open(io.BytesIO(encoded)).convert("RGB")
    strip = Image.new("RGB", (tile * max(1, len(columns)), tile * len(layout.rows)), "white")
    for p, y in enumerate(layout.rows):
        for i, c in enumerate(columns):
            crop = sheet.crop((layout.columns[c], y, layout.columns[c] + layout.tile, y + layout.tile))
            strip.paste(crop.resize((tile, tile), Image.Resampling.LANCZOS), (i * tile, p * tile))
    return strip


def compact(encoded: bytes, max_width: int = 900) -> tuple[str, str]:
    """An image at most ``max_width`` pixels wide, encoded as :func:`_encode` does."""
    picture = Image.open(io.BytesIO(encoded)).convert("RGB")
    if picture.width > max_width:
        size = (max_width, round(picture.height * max_width / picture.width))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return encode(picture)


def _layout_for(run: RunLog, sheet: Sheet) -> SheetLayout | None:
    """The geometry of a sheet in the run's tile size with as many probes and methods as it is big (None: none)."""
    tile = int(run.settings.get("tile_size", 128))
    bare = sheet_layout(0, 0, tile)
    probes, methods = (sheet.height - bare.height) // bare.row_height, (sheet.width - bare.width) // (tile + GAP)
    layout = sheet_layout(max(0, probes), max(0, methods), tile)
    return layout if layout.size == (sheet.height, sheet.width) else None


#: at most this many evaluations in a filmstrip (a long run's page stays light): evenly spaced, the first, the last
#: and every alert's evaluation kept
MAX_FILM = 40


def _shown(usable: list[Any], run: RunLog) -> list[Any]:
    """The evaluations a filmstrip shows: all, or :data:`MAX_FILM` of them (first, last, alerts, evenly between)."""
    if len(usable) <= MAX_FILM:
        return usable
    alerted = {(epoch, step, repeat) for epoch, step, repeat, _ in run.alerts}
    last = len(usable) - 1
    keep = {k for k, (_, s, _) in enumerate(usable) if (s.epoch, *s.key) in alerted and 0 < k < last}
    room = max(2, MAX_FILM - len(keep))  # evenly spaced, the first and the last among them
    keep |= {round(j * last / (room - 1)) for j in range(room)}
    return [u for k, u in enumerate(usable) if k in keep]


def filmstrip_section(run: RunLog, prefix: str) -> tuple[str, list[str], list[str]]:
    """The filmstrips, the CSS rules of their thumbnails (one per evaluation shown) and the rules' class names."""
    found = [(i, s, layout) for i, s in enumerate(run.sheets) if (layout := _layout_for(run, s)) is not None]
    usable = _shown(found, run)
    if not usable:
        return "", [], []
    styles, classes, first = [], [], usable[0][0]
    for i, sheet, layout in usable:
        picture = thumbnails(sheet.encoded, layout, range(0 if i == first else 1, len(layout.columns)))
        data, mime = encode(picture)
        styles.append(f".{prefix}s{i} {{ background-image: url(data:{mime};base64,{data}); }}")
        classes.append(f"{prefix}s{i}")
    parts = [
        "<h2>Filmstrips</h2>",
        f'<p class="muted">Each probe across {_across(len(usable), len(found))}: the input, then each method\'s '
        "overlay (cut out of the explanation sheets, <code>xai/sheet</code>), with the prediction and each map's drift "
        "against the reference; in red a wrong prediction, and the drift of the probes an alert at that evaluation "
        "says moved (as on the sheet).</p>",
    ]
    shown = {i: sheet_methods(run, sheet, layout) for i, sheet, layout in usable}  # a failed method leaves a sheet
    named = [m for m in run.methods if any(m in on for on in shown.values())]
    columns = ["input", *named, *dict.fromkeys(m for on in shown.values() for m in on if m not in named)]
    moved = alerted_probes(run.alerts)
    last = run.predictions.get(usable[-1][1].key, [])
    for p in range(len(usable[-1][2].rows)):
        label = last[p].get("label") if p < len(last) else None
        parts.append(f'<h3>probe #{p}{"" if label is None else f" — label {label}"}</h3><div class="film"><table>')
        parts.append("<tr><th></th>" + "".join(f"<th>{run.when(s.epoch, *s.key)}</th>" for _, s, _ in usable) + "</tr>")
        for c, name in enumerate(columns):
            cells = [f'<th style="text-align:right">{html.escape(name)}</th>']
            for i, sheet, layout in usable:
                k = 0 if c == 0 else shown[i].index(name) + 1 if name in shown[i] else None  # its column there
                if k is None or p >= len(layout.rows):
                    cells.append('<td><div class="cap">skipped</div></td>' if k is None else "<td></td>")
                    continue
                source = first if c == 0 else i  # the input column is only in the first thumbnail
                x = FILM_TILE * (k if source == first else k - 1)
                tile = f'<div class="tile {prefix}s{source}" style="background-position:-{x}px -{p * FILM_TILE}px">'
                row = run.predictions.get(sheet.key, [])  # this evaluation's, never its epoch's
                info = row[p] if p < len(row) else {}
                if c == 0:
                    bad = info.get("label") is not None and info.get("predicted") != info.get("label")
                    conf = info.get("confidence")
                    text = f"pred {info.get('predicted', '?')}" + ("" if conf is None else f" ({conf:.2f})")
                else:
                    drift = info.get(drift_column(name), info.get(f"{name} drift"))  # (older runs: "<method> drift")
                    bad = drift is not None and p in moved.get((*sheet.key, name), ())
                    text = f"drift {'–' if drift is None else f'{drift:.2f}'}"
                cells.append(f'<td>{tile}</div><div class="cap{" bad" if bad else ""}">{text}</div></td>')
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table></div>")
    return "".join(parts), styles, classes


#: a prediction table's drift column (:func:`drift_column`; older runs: ``"<method> drift"``)
_DRIFT_COLUMN = re.compile(f"(.+?)(?:{re.escape(drift_column(''))}| drift)")


def sheet_methods(run: RunLog, sheet: Sheet, layout: SheetLayout) -> list[str]:
    """The methods of a sheet's columns, in order: its prediction table's drift columns (a method skipped at that
    evaluation has neither), else the run's methods."""
    row = (run.predictions.get(sheet.key) or [{}])[0]
    found = [m.group(1) for m in map(_DRIFT_COLUMN.fullmatch, row) if m]
    return found if len(found) == len(layout.columns) - 1 else run.methods[: len(layout.columns) - 1]


def alerted_probes(alerts: Sequence[tuple[int, int, int, str]]) -> dict[tuple[int, int, str], set[int]]:
    """Per evaluation (``Sheet.key``) and method, the probes its alerts say moved (their messages' ``probes [...]``):
    red in the filmstrips as on the sheet, never by a fixed cut (rank drift of 0.5 is common in healthy runs)."""
    found: dict[tuple[int, int, str], set[int]] = {}
    for _, step, repeat, message in alerts:
        method = re.match(r"Attribution drift at epoch \d+ \((.+?)\):", message)
        probes = re.search(r"; probes \[([\d, ]*)\]", message)
        if method and probes:
            named = {int(p) for p in probes.group(1).split(",") if p.strip()}
            found.setdefault((step, repeat, method.group(1)), set()).update(named)
    return found


def _across(shown: int, found: int) -> str:
    return (
        f"all {found} evaluations"
        if shown == found
        else f"{shown} of the {found} evaluations (evenly spaced; alerts kept)"
    )
