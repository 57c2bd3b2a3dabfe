"""The explanation sheet, one image per evaluation: per probe a caption, the input, an overlay per method (``tile_size``
pixels, nearest-neighbour up, area averaging down) and the probe's drift under each; a colour scale at the bottom.
And an alert's evidence image ``xai/<method>/alert/evidence``: per probe that moved the input, the map before and at
the alert (one colour scale per probe) and their difference (blue lost, red gained), a box per region of the alert.

Example::

    >>> import torch
    >>> from lightning_xai.explain import Explanation
    >>> maps, probes = {"gradcam": Explanation(torch.rand(2, 3, 3), torch.rand(2, 12, 12))}, torch.tensor([1, 0])
    >>> sheet = render_sheet(torch.rand(2, 1, 12, 12), maps, {"gradcam": "max"}, predicted=probes,
    ...     confidence=torch.tensor([0.9, 0.6]), labels=None, targets=probes)
    >>> sheet.dtype, tuple(sheet.shape) == (3, *sheet_layout(2, 1).size)
    (torch.uint8, True)
"""

from __future__ import annotations

import dataclasses
import functools
import textwrap
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from lightning_xai.explain import Explanation
from lightning_xai.functional.shift import blank_maps
from lightning_xai.visualize.display import Denormalize, to_display_images
from lightning_xai.visualize.render import check_colormap, device_lut, lut_uint8, normalize_maps
from lightning_xai.visualize.text import FONT_SIZE as FONT_SIZE  # re-exported
from lightning_xai.visualize.text import Colour, fit_text, put_all, text_width, wrap_text
from lightning_xai.visualize.text import _font as _font
from lightning_xai.visualize.text import _stamp as _stamp
from lightning_xai.visualize.text import put as _put

DEFAULT_TILE_SIZE = 128
MARGIN, GAP, LINE = 10, 8, 20
NOTE_LINES = 3
#: column titles of the known methods (others show their name)
METHOD_TITLES = {"gradcam": "Grad-CAM", "integrated_gradients": "Int. Gradients"}
INK, MUTED, ALERT = (0.08, 0.08, 0.08), (0.38, 0.38, 0.38), (0.80, 0.05, 0.05)
#: the diverging colours of the difference map: blue = relevance lost, white = unchanged, red = gained
EVIDENCE_DIFF_COLORMAP = "RdBu_r"
#: box colours, one per region (cycled): visible on jet/viridis/inferno/turbo and on the diverging map
BOX_COLOURS = ((255, 255, 255), (0, 255, 0), (255, 0, 255), (255, 255, 0), (0, 255, 255), (255, 128, 0))
MAX_PROBES = 8
#: the tallest picture a JPEG holds: a sheet shows the probes that fit (about 370 at 128-pixel tiles)
MAX_HEIGHT = 65_535
#: the evidence image's margin, gap, header, column title and probe label (pixels)
_MARGIN, _GAP, _HEADER, _COLUMN_TITLE, _LABEL = 8, 6, 44, 18, 132


@dataclass(frozen=True)
class SheetLayout:
    """Where everything lies on a sheet, in pixels: x of each tile ``columns`` (the input, then the methods), y of each
    probe's tiles (``rows``; its caption on the line above, its drift below). The report cuts tiles out with it."""

    width: int
    height: int
    tile: int
    columns: tuple[int, ...]
    rows: tuple[int, ...]
    row_height: int
    line: int = LINE
    #: every tile cell is an even block of at least 4x4 pixels at even coordinates: under JPEG's 4:2:0 chroma each
    #: cell keeps its colour (its edges soften by about a pixel; two-pixel cells would take their neighbours' hues)
    even_cells: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width


def sheet_layout(num_probes: int, num_methods: int, tile_size: int = DEFAULT_TILE_SIZE) -> SheetLayout:
    """The geometry of a sheet of ``num_probes`` rows and ``num_methods`` overlays per row."""
    tile = int(tile_size)
    columns = tuple(MARGIN + i * (tile + GAP) for i in range(num_methods + 1))
    header = MARGIN + 2 * LINE  # title line, column titles
    row_height = LINE + tile + LINE + GAP
    rows = tuple(header + LINE + i * row_height for i in range(num_probes))
    height = header + num_probes * row_height + 14 + LINE + NOTE_LINES * LINE + MARGIN  # + colour bar, labels, notes
    return SheetLayout(columns[-1] + tile + MARGIN, height, tile, columns, rows, row_height)


#: a tile's caption when its map holds no relevance (its drift against a map with relevance would read 1.00)
NO_RELEVANCE = "no relevance"


@functools.lru_cache(maxsize=16)
def _static_page(layout: SheetLayout, heads: tuple[str, ...], colormap: str, notes: str) -> np.ndarray:
    """The page but the title, tiles and captions: column titles, colour bar, ``notes`` (read-only; copied per use)."""
    image = Image.new("RGB", (layout.width, layout.height), (255, 255, 255))
    bar_y = (layout.rows[-1] - LINE + layout.row_height) if layout.rows else MARGIN + 2 * LINE
    bar = lut_uint8(colormap)[np.round(np.linspace(0.0, 255.0, layout.width - 2 * MARGIN)).astype(np.int64)]
    image.paste(Image.fromarray(np.ascontiguousarray(np.broadcast_to(bar, (12, *bar.shape)))), (MARGIN, bar_y))
    for x, head in zip(layout.columns, heads, strict=True):
        _put(image, x, MARGIN + LINE, fit_text(head, layout.tile), MUTED)
    _put(image, MARGIN, bar_y + 14, "0", INK)
    _put(image, layout.width - MARGIN - text_width("max"), bar_y + 14, "max", INK)
    for k, line in enumerate(wrap_text(notes, layout.width - 2 * MARGIN)[:NOTE_LINES]):
        _put(image, MARGIN, bar_y + 14 + (k + 1) * LINE, line, MUTED)
    page = np.array(image.convert("RGBX"))  # four bytes a pixel, as Pillow keeps RGB: no conversion per page
    page.flags.writeable = False
    return page


def _side_by_side(parts: Sequence[tuple[str, Colour]], y: int, right: float) -> list[tuple[float, int, str, Colour]]:
    """``parts`` (text, colour) in one line at ``y`` from the left margin, each cut to what is left before ``right``
    (each part but the first starts or follows spaces: their ink never meets)."""
    placed: list[tuple[float, int, str, Colour]] = []
    x: float = MARGIN
    for text, colour in parts:
        if text and x < right:
            placed.append((x, y, fitted := fit_text(text, right - x), colour))
            x += text_width(fitted)
    return placed


def prepare_sheet(
    inputs: Tensor,
    results: Mapping[str, Explanation],
    normalizations: Mapping[str, str],
    *,
    predicted: Tensor,
    confidence: Tensor,
    labels: Tensor | None,
    targets: Tensor,
    drift: Mapping[str, Tensor | None] | None = None,
    drift_name: str = "drift",
    moved: Mapping[str, Collection[int]] | None = None,
    drift_note: str = "",
    title: str = "",
    alert: str = "",
    tile_size: int = DEFAULT_TILE_SIZE,
    colormap: str = "jet",
    denormalize: Denormalize = None,
    alpha: float = 0.5,
    display: Tensor | None = None,
    heats: Mapping[str, Tensor] | None = None,
    blank: Mapping[str, Sequence[bool]] | None = None,
    skipped: Sequence[str] = (),
) -> tuple[SheetLayout, Callable[[], Image.Image]]:
    """The sheet's layout and a function composing its RGBX page with numpy and Pillow (for a background thread)
    from tiles rendered in one batch on the inputs' device. ``results``' ``display`` maps scaled by
    ``normalizations``; captions from ``predicted``, ``confidence``, ``labels`` (or None), ``targets``; ``drift``: each
    method's per-probe drift (None: "drift -") named ``drift_name``, explained by ``drift_note``, red for the probes
    ``moved`` names (per method: those its alert at this evaluation says moved, so red means what the alert means);
    ``alert``: what follows the ``title`` in red; ``display``/``heats``/``blank``: the display images, normalised maps
    and which maps hold no relevance (:func:`~lightning_xai.functional.shift.blank_maps`), when the caller has them;
    ``skipped``: the methods without maps at this evaluation (no column: the notes name them first)."""
    if int(tile_size) < 16:
        raise ValueError(f"`tile_size` must be at least 16 pixels, got {tile_size!r}.")
    colormap = check_colormap(colormap)
    names, total = list(results), int(inputs.shape[0])
    bare = sheet_layout(0, len(names), tile_size)
    rows = min(total, max(1, (MAX_HEIGHT - bare.height) // bare.row_height))  # as many probes as a JPEG can hold
    layout = sheet_layout(rows, len(names), tile_size)
    display = (to_display_images(inputs, denormalize) if display is None else display)[:rows]
    heats = heats or {n: normalize_maps(results[n].display, mode=normalizations.get(n, "max")) for n in names}
    heats = {n: heat[:rows] for n, heat in heats.items()}
    # the tiles of all probes and methods in one batch, (P, h, 1 + M, w, 3) uint8, at the input's resolution when the
    # tile is larger (the page scales them up by whole pixels, nearest-exact), else area-averaged down to the tile
    h, w = int(display.shape[-2]), int(display.shape[-1])
    t, scale, n = layout.tile, layout.tile / max(h, w), int(display.shape[0])
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    shown = display if scale >= 1 else F.interpolate(display, size=(sh, sw), mode="area")
    rh, rw = int(shown.shape[-2]), int(shown.shape[-1])
    image = shown.permute(0, 2, 3, 1)  # (N, rh, rw, 3)
    out = torch.full((n, rh, 1 + len(names), rw, 4), 255, dtype=torch.uint8, device=shown.device)  # RGBX
    out[:, :, 0, :, :3] = image.mul(255.0).add_(0.5)  # values in [0, 1]: + 0.5 then truncation rounds
    if names:
        sized = [heats[m].to(shown.device).float() for m in names]  # (bilinear to the same size: the same values)
        sized = [m if m.shape[-2:] == (rh, rw) else F.interpolate(m[None], (rh, rw), mode="bilinear")[0] for m in sized]
        heat = torch.nan_to_num(torch.stack(sized), nan=0.0).clamp_(0.0, 1.0)  # (M, N, rh, rw)
        colour = device_lut(colormap, str(shown.device))[heat.mul(255.0).round_().long()]  # (M, N, rh, rw, 3)
        blended = colour.sub_(image).mul_(heat.mul_(alpha).unsqueeze(-1)).add_(image)
        out[:, :, 1:, :, :3] = blended.permute(1, 2, 0, 3, 4).mul(255.0).add_(0.5)
    tiles = out.cpu().numpy().view(np.uint32)[..., 0]  # RGBX as one number a pixel
    at = [np.minimum(((np.arange(s) + 0.5) * (r / s)).astype(int), r - 1) for s, r in ((sh, rh), (sw, rw))]
    top, left = (t - sh) // 2, (t - sw) // 2
    origins = (*layout.columns, *layout.rows, layout.row_height, top, left)
    even = sh % rh == 0 and sw % rw == 0 and all(f % 2 == 0 and f >= 4 for f in (sh // rh, sw // rw))
    layout = dataclasses.replace(layout, even_cells=even and all(v % 2 == 0 for v in origins))
    pred, conf, tgt = (v.detach().cpu().tolist() for v in (predicted, confidence, targets))
    lab = None if labels is None else labels.detach().cpu().tolist()
    drifts = {n: (None if v is None else v.detach().cpu().tolist()) for n, v in (drift or {}).items()}
    blank = {n: list(blank[n][:rows]) if blank else blank_maps(results[n].raw[:rows]).tolist() for n in names}
    moved = {n: set(indices) for n, indices in (moved or {}).items()}
    scales = sorted({normalizations.get(n, "max") for n in names})
    per = " or ".join("99th percentile" if s == "percentile" else "max" for s in scales)
    notes = f"heat: |attribution| / {per} of each map."
    if skipped:  # said first: a column that is not there says nothing by itself
        gone = ", ".join(METHOD_TITLES.get(m, m) for m in skipped)
        notes = f"Not shown: {gone} (no maps at this evaluation; xai/errors says why). {notes}"
    if rows < total:  # said first: the notes are cut at NOTE_LINES lines
        notes = f"The first {rows} of {total} probes (a JPEG is at most {MAX_HEIGHT} px tall). {notes}"
    if drift_note:
        red = " Red: the probes an alert says moved (by the alert's own measure)." if any(moved.values()) else ""
        notes += f" {drift_note}.{red}"
    heads = ("input", *(METHOD_TITLES.get(n, n) for n in names))

    def compose() -> Image.Image:
        page = _static_page(layout, heads, colormap, notes).copy()  # RGBX
        pixels = page.view(np.uint32)[..., 0]  # (H, W), one number a pixel: the tiles are moved as such
        if n:  # the tiles, scaled up, into their places in strided assignments (whole factors: rows broadcast)
            wide = np.repeat(tiles, sw // rw, axis=3) if sw % rw == 0 else np.take(tiles, at[1], axis=3)
            y0, x0, step, columns = layout.rows[0], layout.columns[0], t + GAP, len(heads)
            band = pixels[y0 : y0 + n * layout.row_height].reshape(n, layout.row_height, layout.width)
            cells = band[:, top : top + sh, x0 : x0 + columns * step].reshape(n, sh, columns, step)[..., left:]
            if sh % rh == 0:
                cells[..., :sw].reshape(n, rh, sh // rh, columns, sw)[...] = wide[:, :, None]
            else:
                cells[..., :sw] = np.take(wide, at[0], axis=1)
        room = layout.width - 2 * MARGIN
        heading = [(title, INK), (alert, ALERT)]  # the alert after the title, in the alert's colour, cut to fit
        if alert and text_width(title + "   ALERT") > room:  # too narrow for the title and "ALERT": "ALERT" first
            heading = [("ALERT", ALERT), ("   " + title, INK)]
        texts = _side_by_side(heading, MARGIN, MARGIN + room)
        titles = len(texts)  # they name the epoch: never drawn again, so not cached
        for i, y in enumerate(layout.rows):  # each probe's caption above its tiles, its drift values below them
            label = None if lab is None else lab[i]
            bad = ALERT if label is not None and pred[i] != label else INK  # (short texts: most are cached)
            parts: list[tuple[str, Colour]] = [(f"#{i}   label {'-' if label is None else label}   ", INK)]
            parts += [(f"pred {pred[i]}", bad), (f"   conf {conf[i]:.2f}", bad)]
            if tgt[i] != (label if label is not None else pred[i]):
                parts.append((f"   expl. {tgt[i]}", MUTED))
            texts += _side_by_side(parts, y - LINE, MARGIN + room)
            for x, name in zip(layout.columns[1:], names, strict=True):
                drift = drifts.get(name)
                if blank[name][i]:
                    text, colour = NO_RELEVANCE, MUTED
                elif drift is None or i >= len(drift):
                    text, colour = f"{drift_name} -", MUTED
                else:
                    text = f"{drift_name} {drift[i]:.2f}"
                    colour = ALERT if i in moved.get(name, ()) else INK
                texts.append((x, y + t + 1, fit_text(text, t), colour))
        put_all(page, texts, once=titles)  # in one blend: no two texts' ink meet
        # RGBX, sharing the array's memory (Pillow keeps RGB as RGBX: nothing converted); Picture encodes it as is
        return Image.frombuffer("RGBX", (layout.width, layout.height), page, "raw", "RGBX", 0, 1)

    return layout, compose


def render_sheet(
    inputs: Tensor, results: Mapping[str, Explanation], normalizations: Mapping[str, str], **options: Any
) -> Tensor:
    """One evaluation's sheet as a ``(3, H, W)`` uint8 CPU tensor; takes the arguments of :func:`prepare_sheet`."""
    _, compose = prepare_sheet(inputs, results, normalizations, **options)
    return torch.from_numpy(np.array(compose().convert("RGB"))).permute(2, 0, 1)


def evidence_tag(method: str) -> str:
    """The tag of a method's evidence image."""
    return f"xai/{method}/alert/evidence"


def tile_origin(row: int, column: int, tile: tuple[int, int], header: int = 0) -> tuple[int, int]:
    """The top-left ``(x, y)`` of an evidence tile (``column`` 0 input .. 3 difference; ``header``: extra pixels)."""
    top = _MARGIN + _HEADER + header + _COLUMN_TITLE
    return _MARGIN + _LABEL + column * (tile[0] + _GAP), top + row * (tile[1] + _GAP)


def _colour(values: np.ndarray, lut: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low if high > low else 1.0
    return lut[np.clip((values - low) / span * 255.0, 0, 255).round().astype(np.int64)]


def render_evidence(
    inputs: Tensor,
    alert: Any,
    *,
    denormalize: Denormalize = None,
    colormap: str = "jet",
    tile_size: int = 128,
    labels: Tensor | None = None,
    max_probes: int = MAX_PROBES,
) -> Tensor | None:
    """The evidence image of ``alert`` as a ``(3, H, W)`` uint8 CPU tensor; None when the alert carries no evidence.

    Rows: the first ``max_probes`` of ``alert.evidence.probe_indices`` (those of the named regions first) among all
    ``inputs``, with their ``labels``;
    ``colormap`` colours the maps; a tile's long side is about ``tile_size`` (small maps scaled up by whole factors)."""
    evidence = getattr(alert, "evidence", None)
    if evidence is None or len(evidence.probe_indices) == 0:
        return None
    named = {p for r in alert.regions for p in r.probe_indices}  # the named regions' probes first
    shown = min(len(evidence.probe_indices), len(evidence.before), len(evidence.after))
    if shown == 0:
        return None
    order = sorted(range(shown), key=lambda i: evidence.probe_indices[i] not in named)
    order = order[:max_probes]
    rows = [evidence.probe_indices[i] for i in order]
    before, after = (m[order].detach().float().cpu().numpy() for m in (evidence.before, evidence.after))
    pictures = to_display_images(inputs[torch.as_tensor(rows, device=inputs.device)].detach().float(), denormalize)
    pictures_np = (pictures.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    height, width = before.shape[-2:]
    scale = max(1, tile_size // max(height, width))
    tile_h, tile_w = height * scale, width * scale
    lut, diverging = lut_uint8(colormap), lut_uint8(EVIDENCE_DIFF_COLORMAP)
    then = f"before (epoch {evidence.before_epoch})" if evidence.before_epoch >= 0 else "before"
    columns = ("input", then, f"at the alert (epoch {alert.epoch})", "at the alert - before")
    canvas_w = 2 * _MARGIN + _LABEL + 4 * tile_w + 3 * _GAP
    boxes = "; ".join(_region_text(r) for r in alert.regions) or "none"
    follow = getattr(alert, "follow", None)  # the transplant test's answer, when the model was asked
    told = f"; {follow.summary()}" if follow is not None else ""
    lines = textwrap.wrap(f"the probes that moved; boxes: {boxes}{told}", width=max(40, (canvas_w - 2 * _MARGIN) // 6))
    extra = max(0, len(lines) - 1) * 13  # the header grows by the lines the boxes need
    canvas_h = _MARGIN + _HEADER + extra + _COLUMN_TITLE + len(rows) * (tile_h + _GAP) + _MARGIN
    canvas = Image.new("RGB", (canvas_w, canvas_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    big, font, small = (ImageFont.load_default(size=size) for size in (14, 11, 10))
    method = METHOD_TITLES.get(alert.method, alert.method)  # as the sheet's column says it
    heading = f"{method}: alert at epoch {alert.epoch} (step {alert.global_step})"
    draw.text((_MARGIN, _MARGIN), heading, fill=(0, 0, 0), font=big)
    draw.multiline_text((_MARGIN, _MARGIN + 20), "\n".join(lines), fill=(60, 60, 60), font=font, spacing=2)
    for c, title in enumerate(columns):
        x, y = tile_origin(0, c, (tile_w, tile_h), extra)
        draw.text((x, y - _COLUMN_TITLE), title, fill=(0, 0, 0), font=font)
    region_colour = {id(r): BOX_COLOURS[i % len(BOX_COLOURS)] for i, r in enumerate(alert.regions)}
    for row, probe in enumerate(rows):
        _, y = tile_origin(row, 0, (tile_w, tile_h), extra)
        high = float(max(before[row].max(), after[row].max(), 0.0))
        diff = after[row] - before[row]
        spread = float(np.abs(diff).max()) or 1.0
        maps = [_colour(before[row], lut, 0.0, high), _colour(after[row], lut, 0.0, high)]
        tiles = [pictures_np[row], *maps, _colour(diff, diverging, -spread, spread)]
        mine = [r for r in alert.regions if probe in r.probe_indices]
        for c, rgb in enumerate(tiles):
            x, _ = tile_origin(row, c, (tile_w, tile_h), extra)
            size = (rgb.shape[1] * scale, rgb.shape[0] * scale)
            canvas.paste(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.Resampling.NEAREST), (x, y))
            for region in mine:  # a coloured line with a black edge, just outside the region but inside the tile
                top, left, bottom, right = (int(v) for v in region.box)  # input pixels, bottom/right exclusive
                if right > left and bottom > top:
                    x0, y0 = max(x, x + left * scale - 3), max(y, y + top * scale - 3)
                    x1, y1 = min(x + tile_w, x + right * scale + 3) - 1, min(y + tile_h, y + bottom * scale + 3) - 1
                    draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0), width=1)
                    draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), outline=region_colour[id(region)], width=2)
        known = [f"label {int(labels[probe])}"] if labels is not None and probe < len(labels) else []
        label = "\n".join([f"probe {probe}", *known, *(region.label for region in mine)])
        draw.multiline_text((_MARGIN, y + 2), label, fill=(0, 0, 0), font=font, spacing=2)
        draw.text((_MARGIN, y + tile_h - 14), f"diff ±{spread:.2g}", fill=(90, 90, 90), font=small)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def _region_text(region: Any) -> str:
    """``"class 3 top-left"``, with ``" (followed 5/9, 0 before)"`` when the region was put to the model alone."""
    text = f"{region.label} {getattr(region, 'place', '') or ''}".strip()
    follow = getattr(region, "follow", None)
    if follow is None:
        return text
    return f"{text} (followed {follow.followed}/{follow.pairs}, {follow.followed_before} before)"
