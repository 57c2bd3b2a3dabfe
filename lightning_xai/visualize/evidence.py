"""The evidence image of an alert: for the probes that moved, the input, the map before, the map at the alert and
the difference (at the alert − before, blue = lost, red = gained), with the alert's region boxes drawn (one per class
or probe group). Logged as ``xai/<method>/alert/evidence`` (``xai/<name>/<method>/alert/evidence`` for a named
monitor) at the alert's step, by every logger that takes images.

The maps are the detector's own (:class:`~lightning_xai.drift.alerts.AlertEvidence`: the share of each probe's
relevance per input pixel), so the picture shows what the alert measured, in the method that alerted. "Before" and
"at the alert" share one colour scale per probe (so a map that got fainter looks fainter); the difference has a
symmetric scale of its own per probe.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from lightning_xai.visualize.display import Denormalize, to_display_images
from lightning_xai.visualize.render import lut_uint8

__all__ = ["EVIDENCE_DIFF_COLORMAP", "evidence_tag", "render_evidence", "tile_origin"]

#: the diverging colours of the difference map: blue = relevance lost, white = unchanged, red = gained
EVIDENCE_DIFF_COLORMAP = "RdBu_r"
#: box colours, one per region (cycled): visible on jet/viridis/inferno/turbo and on the diverging map
BOX_COLOURS = ((255, 255, 255), (0, 255, 0), (255, 0, 255), (255, 255, 0), (0, 255, 255), (255, 128, 0))
MAX_PROBES = 8
_MARGIN, _GAP, _HEADER, _COLUMN_TITLE, _LABEL = 8, 6, 44, 18, 132


def evidence_tag(method: str) -> str:
    """The tag of a method's evidence image.

    Example::

        >>> evidence_tag("integrated_gradients")
        'xai/integrated_gradients/alert/evidence'
    """
    return f"xai/{method}/alert/evidence"


def tile_origin(row: int, column: int, tile: tuple[int, int], header: int = 0) -> tuple[int, int]:
    """The top-left pixel ``(x, y)`` of a tile (``column`` 0: input, 1: before, 2: at the alert, 3: difference) of
    the evidence image with tiles of ``tile = (width, height)`` pixels (``header``: extra pixels of a wrapped header).

    Example::

        >>> tile_origin(0, 3, (64, 64))
        (350, 70)
    """
    top = _MARGIN + _HEADER + header + _COLUMN_TITLE
    return _MARGIN + _LABEL + column * (tile[0] + _GAP), top + row * (tile[1] + _GAP)


def _colour(values: np.ndarray, lut: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low if high > low else 1.0
    index = np.clip((values - low) / span * 255.0, 0, 255).round().astype(np.int64)
    return lut[index]


def _tile(rgb: np.ndarray, scale: int) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(rgb)).resize(
        (rgb.shape[1] * scale, rgb.shape[0] * scale), Image.Resampling.NEAREST
    )


def _font(size: int) -> Any:
    return ImageFont.load_default(size=size)


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

    Args:
        inputs: every probe, as the model sees them ``(N, C, H, W)`` (the rows are
            ``inputs[alert.evidence.probe_indices]``).
        alert: a :class:`~lightning_xai.DriftAlert` with ``evidence`` (and ``regions`` for the boxes).
        denormalize: how probes become displayable images.
        colormap: the colours of the maps before and at the alert.
        tile_size: pixels of a tile's longer side (small inputs are upscaled by a whole factor).
        labels: the probes' labels, shown beside each row (None: unlabeled).
        max_probes: at most this many probes (the first of ``probe_indices``).

    Example::

        >>> from lightning_xai.drift.alerts import AlertEvidence, AlertRegion, DriftAlert
        >>> before, after = torch.full((1, 8, 8), 1 / 64), torch.zeros(1, 8, 8)
        >>> after[0, :2, :2] = 0.25
        >>> alert = DriftAlert(3, 30, "gradcam", "novel_relevance", "median", 0.5, 0.1, (1,), "drift",
        ...     regions=(AlertRegion("class 0", (0,), (1,), (0, 0, 2, 2)),),
        ...     evidence=AlertEvidence((1,), before, after, 1))
        >>> tuple(render_evidence(torch.rand(2, 3, 8, 8), alert, tile_size=32).shape)
        (3, 116, 294)
    """
    evidence = getattr(alert, "evidence", None)
    if evidence is None or len(evidence.probe_indices) == 0:
        return None
    rows = list(evidence.probe_indices)[:max_probes]
    before = evidence.before[: len(rows)].detach().float().cpu().numpy()
    after = evidence.after[: len(rows)].detach().float().cpu().numpy()
    pictures = to_display_images(inputs[torch.as_tensor(rows, device=inputs.device)].detach().float(), denormalize)
    pictures_np = (pictures.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    height, width = before.shape[-2:]
    scale = max(1, tile_size // max(height, width))
    tile_h, tile_w = height * scale, width * scale
    lut, diverging = lut_uint8(colormap), lut_uint8(EVIDENCE_DIFF_COLORMAP)
    columns = (
        "input",
        f"before (epoch {evidence.before_epoch})" if evidence.before_epoch >= 0 else "before",
        f"at the alert (epoch {alert.epoch})",
        "at the alert - before",
    )
    canvas_w = 2 * _MARGIN + _LABEL + 4 * tile_w + 3 * _GAP
    boxes = "; ".join(f"{r.label} {getattr(r, 'place', '') or ''}".strip() for r in alert.regions) or "none"
    lines = textwrap.wrap(f"the probes that moved; boxes: {boxes}", width=max(40, (canvas_w - 2 * _MARGIN) // 6))
    extra = max(0, len(lines) - 1) * 13  # the header grows by the lines the boxes need
    canvas_h = _MARGIN + _HEADER + extra + _COLUMN_TITLE + len(rows) * (tile_h + _GAP) + _MARGIN
    canvas = Image.new("RGB", (canvas_w, canvas_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    heading = f"{alert.method}: alert at epoch {alert.epoch} (step {alert.global_step})"
    draw.text((_MARGIN, _MARGIN), heading, fill=(0, 0, 0), font=_font(14))
    draw.multiline_text((_MARGIN, _MARGIN + 20), "\n".join(lines), fill=(60, 60, 60), font=_font(11), spacing=2)
    for c, title in enumerate(columns):
        x, y = tile_origin(0, c, (tile_w, tile_h), extra)
        draw.text((x, y - _COLUMN_TITLE), title, fill=(0, 0, 0), font=_font(11))
    region_colour = {id(r): BOX_COLOURS[i % len(BOX_COLOURS)] for i, r in enumerate(alert.regions)}
    for row, probe in enumerate(rows):
        _, y = tile_origin(row, 0, (tile_w, tile_h), extra)
        high = float(max(before[row].max(), after[row].max(), 0.0))
        diff = after[row] - before[row]
        spread = float(np.abs(diff).max()) or 1.0
        tiles = (
            pictures_np[row],
            _colour(before[row], lut, 0.0, high),
            _colour(after[row], lut, 0.0, high),
            _colour(diff, diverging, -spread, spread),
        )
        mine = [r for r in alert.regions if probe in r.probe_indices]
        for c, rgb in enumerate(tiles):
            x, _ = tile_origin(row, c, (tile_w, tile_h), extra)
            canvas.paste(_tile(rgb, scale), (x, y))
            for region in mine:
                _box(draw, region.box, x, y, scale, region_colour[id(region)], (tile_w, tile_h))
        label = f"probe {probe}"
        if labels is not None and probe < len(labels):
            label += f"\nlabel {int(labels[probe])}"
        for region in mine:
            label += f"\n{region.label}"
        draw.multiline_text((_MARGIN, y + 2), label, fill=(0, 0, 0), font=_font(11), spacing=2)
        draw.text((_MARGIN, y + tile_h - 14), f"diff ±{spread:.2g}", fill=(90, 90, 90), font=_font(10))
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def _box(
    draw: ImageDraw.ImageDraw,
    box: Sequence[int],
    x: int,
    y: int,
    scale: int,
    colour: tuple[int, int, int],
    size: tuple[int, int],
) -> None:
    """A region box (input pixels, bottom/right exclusive) on a tile at ``(x, y)``: a coloured line with a black edge,
    drawn just outside the region (inside the tile) so that it hides none of the region's pixels."""
    top, left, bottom, right = (int(v) for v in box)
    if right <= left or bottom <= top:
        return
    x0, y0 = max(x, x + left * scale - 3), max(y, y + top * scale - 3)
    x1, y1 = min(x + size[0], x + right * scale + 3) - 1, min(y + size[1], y + bottom * scale + 3) - 1
    draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0), width=1)
    draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), outline=colour, width=2)
