"""The evidence image of an alert, ``xai/<method>/alert/evidence``: for the probes that moved, the input, the
detector's map before and at the alert (one colour scale per probe) and their difference (blue lost, red gained),
with a box per region of the alert."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from lightning_xai.visualize.display import Denormalize, to_display_images
from lightning_xai.visualize.render import lut_uint8

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
    ``tile = (width, height)`` pixels (``header``: the extra pixels of a wrapped header).

    Example::

        >>> tile_origin(0, 3, (64, 64))
        (350, 70)
    """
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

    Rows: the first ``max_probes`` of ``alert.evidence.probe_indices`` among all ``inputs``, with their ``labels``;
    ``colormap`` colours the maps; a tile's longer side is about ``tile_size`` (small maps upscaled by a whole factor).

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
    before, after = (m[: len(rows)].detach().float().cpu().numpy() for m in (evidence.before, evidence.after))
    pictures = to_display_images(inputs[torch.as_tensor(rows, device=inputs.device)].detach().float(), denormalize)
    pictures_np = (pictures.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    height, width = before.shape[-2:]
    scale = max(1, tile_size // max(height, width))
    tile_h, tile_w = height * scale, width * scale
    lut, diverging = lut_uint8(colormap), lut_uint8(EVIDENCE_DIFF_COLORMAP)
    then = f"before (epoch {evidence.before_epoch})" if evidence.before_epoch >= 0 else "before"
    columns = ("input", then, f"at the alert (epoch {alert.epoch})", "at the alert - before")
    canvas_w = 2 * _MARGIN + _LABEL + 4 * tile_w + 3 * _GAP
    boxes = "; ".join(f"{r.label} {getattr(r, 'place', '') or ''}".strip() for r in alert.regions) or "none"
    lines = textwrap.wrap(f"the probes that moved; boxes: {boxes}", width=max(40, (canvas_w - 2 * _MARGIN) // 6))
    extra = max(0, len(lines) - 1) * 13  # the header grows by the lines the boxes need
    canvas_h = _MARGIN + _HEADER + extra + _COLUMN_TITLE + len(rows) * (tile_h + _GAP) + _MARGIN
    canvas = Image.new("RGB", (canvas_w, canvas_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    big, font, small = (ImageFont.load_default(size=size) for size in (14, 11, 10))
    heading = f"{alert.method}: alert at epoch {alert.epoch} (step {alert.global_step})"
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
