"""The explanation sheet: one image per evaluation that a person can read at TensorBoard's default zoom.

One row per probe: a caption (probe, label, prediction and confidence), the input, then one overlay per method,
each tile ``tile_size`` pixels (128 by default; small inputs are upscaled with nearest-neighbour so their pixels
stay visible, large ones downscaled with area averaging), the probe's drift under each overlay, and a colour scale
at the bottom. Tiles are rendered on the training device and copied to the CPU once; text is drawn on the CPU
with the bitmap font of :mod:`lightning_xai.visualize.font` (pure torch, no Pillow).

Example::

    >>> import torch
    >>> from lightning_xai.explain import Explanation
    >>> sheet = render_sheet(
    ...     torch.rand(2, 1, 12, 12), {"gradcam": Explanation(torch.rand(2, 3, 3), torch.rand(2, 12, 12))},
    ...     {"gradcam": "max"}, predicted=torch.tensor([1, 0]), confidence=torch.tensor([0.9, 0.6]),
    ...     labels=torch.tensor([1, 1]), targets=torch.tensor([1, 1]))
    >>> sheet.dtype, tuple(sheet.shape) == (3, *sheet_layout(2, 1).size)
    (torch.uint8, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.explain import Explanation
from lightning_xai.visualize.font import GLYPH_HEIGHT, draw_text, fit_text, text_width, wrap_text
from lightning_xai.visualize.render import (
    Denormalize,
    apply_colormap,
    check_colormap,
    normalize_maps,
    overlay,
    to_display_images,
    to_uint8,
)

__all__ = ["DEFAULT_TILE_SIZE", "METHOD_TITLES", "SheetLayout", "render_sheet", "sheet_layout"]

DEFAULT_TILE_SIZE = 128
MARGIN, GAP, LINE = 10, 8, GLYPH_HEIGHT + 4
NOTE_LINES = 3
#: column titles of the known methods (others show their name)
METHOD_TITLES = {"gradcam": "Grad-CAM", "integrated_gradients": "Int. Gradients"}
INK, MUTED, ALERT = (0.08, 0.08, 0.08), (0.38, 0.38, 0.38), (0.80, 0.05, 0.05)


@dataclass(frozen=True)
class SheetLayout:
    """Where everything lies on a sheet (pixels); the report uses it to cut one probe's tiles out of a sheet.

    Attributes:
        width, height: the whole image.
        tile: side of a tile.
        columns: x of each tile column (input first, then one per method).
        rows: y of each probe's tiles (its caption is the line above, its drift values the line below).
        row_height: vertical distance between rows (caption, tiles, drift line, gap).
        line: height of a line of text.
    """

    width: int
    height: int
    tile: int
    columns: tuple[int, ...]
    rows: tuple[int, ...]
    row_height: int
    line: int = LINE

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def sheet_layout(num_probes: int, num_methods: int, tile_size: int = DEFAULT_TILE_SIZE) -> SheetLayout:
    """The geometry of a sheet of ``num_probes`` rows and ``num_methods`` overlays per row: narrow enough to be
    shown near its own size in TensorBoard's image cards (about 350 px wide) with two methods.

    Example::

        >>> layout = sheet_layout(8, 2)
        >>> layout.width, layout.height, layout.columns
        (420, 1562, (10, 146, 282))
    """
    tile = int(tile_size)
    columns = tuple(MARGIN + i * (tile + GAP) for i in range(num_methods + 1))
    header = MARGIN + 2 * LINE  # title line, column titles
    row_height = LINE + tile + LINE + GAP
    rows = tuple(header + LINE + i * row_height for i in range(num_probes))
    legend = 14 + LINE + NOTE_LINES * LINE  # colour bar, its labels, notes
    width = columns[-1] + tile + MARGIN
    height = header + num_probes * row_height + legend + MARGIN
    return SheetLayout(width, height, tile, columns, rows, row_height)


def _fit_tiles(images: Tensor, tile: int) -> tuple[Tensor, int, int]:
    """Resize ``(N, C, H, W)`` so the longer side is ``tile``; returns the images and their offsets in the tile."""
    h, w = int(images.shape[-2]), int(images.shape[-1])
    scale = tile / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    mode = "nearest-exact" if scale >= 1 else "area"
    resized = F.interpolate(images, size=size, mode=mode)
    return resized, (tile - size[0]) // 2, (tile - size[1]) // 2


def _tiles(
    inputs: Tensor,
    results: Mapping[str, Explanation],
    normalizations: Mapping[str, str],
    tile: int,
    colormap: str,
    denormalize: Denormalize,
    alpha: float,
) -> Tensor:
    """``(N, 1 + methods, 3, tile, tile)`` uint8 CPU tiles: the input, then each method's overlay."""
    display = to_display_images(inputs, denormalize)
    shown, top, left = _fit_tiles(display, tile)
    sh, sw = int(shown.shape[-2]), int(shown.shape[-1])
    columns = [shown]
    for name, explanation in results.items():
        heat = normalize_maps(explanation.display.to(display.device), mode=normalizations.get(name, "max"))
        heat = F.interpolate(heat.unsqueeze(1), size=(sh, sw), mode="bilinear", align_corners=False)[:, 0]
        heat = heat.clamp(0.0, 1.0)
        columns.append(overlay(shown, apply_colormap(heat, colormap), heat, alpha=alpha))
    stacked = to_uint8(torch.stack(columns, dim=1))  # (N, 1 + methods, 3, sh, sw)
    if (sh, sw) == (tile, tile):
        return stacked.cpu()
    out = torch.full((*stacked.shape[:3], tile, tile), 255, dtype=torch.uint8, device=stacked.device)
    out[..., top : top + sh, left : left + sw] = stacked
    return out.cpu()


def _fmt_class(value: int | None) -> str:
    return "-" if value is None else str(value)


def render_sheet(
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
    drift_threshold: float | None = None,
    drift_note: str = "",
    title: str = "",
    tile_size: int = DEFAULT_TILE_SIZE,
    colormap: str = "jet",
    denormalize: Denormalize = None,
    alpha: float = 0.5,
) -> Tensor:
    """Render one evaluation as a sheet (see the module docstring).

    Args:
        inputs: ``(P, C, H, W)`` probes as the model sees them.
        results: method -> :class:`~lightning_xai.explain.Explanation` (its ``display`` maps are drawn).
        normalizations: method -> ``"max"`` or ``"percentile"`` (how its maps are scaled to the colour scale).
        predicted: ``(P,)`` predicted classes (the prediction pass).
        confidence: ``(P,)`` their softmax probabilities.
        labels: ``(P,)`` true labels, or None.
        targets: ``(P,)`` the classes the maps explain.
        drift: method -> ``(P,)`` per-probe drift (None or missing: "drift -").
        drift_name: how the drift line names the value (e.g. ``"vs ref"``).
        drift_threshold: drift values above it are drawn in red (the monitor's ``probe_threshold``).
        drift_note: what the drift value is, for the legend.
        title: the first line (run, epoch, step).
        tile_size: side of each tile in pixels (>= 16).
        colormap: one of :data:`~lightning_xai.visualize.render.COLORMAPS`.
        denormalize: ``(mean, std)``, a callable or None (see
            :func:`~lightning_xai.visualize.render.to_display_images`).
        alpha: the heat's opacity at its maximum.

    Returns:
        ``(3, H, W)`` uint8 CPU tensor, ``(H, W) == sheet_layout(P, len(results), tile_size).size``.
    """
    if int(tile_size) < 16:
        raise ValueError(f"`tile_size` must be at least 16 pixels, got {tile_size!r}.")
    check_colormap(colormap)
    names = list(results)
    layout = sheet_layout(int(inputs.shape[0]), len(names), tile_size)
    tiles = _tiles(inputs, results, normalizations, layout.tile, colormap, denormalize, alpha)
    canvas = torch.full((3, layout.height, layout.width), 255, dtype=torch.uint8)
    t = layout.tile
    draw_text(canvas, fit_text(title, layout.width - 2 * MARGIN), MARGIN, MARGIN, INK)
    heads = ["input"] + [METHOD_TITLES.get(n, n) for n in names]
    for x, head in zip(layout.columns, heads, strict=True):
        draw_text(canvas, fit_text(head, t), x, MARGIN + LINE, MUTED)
    pred = [int(v) for v in predicted.cpu()]
    conf = [float(v) for v in confidence.cpu()]
    tgt = [int(v) for v in targets.cpu()]
    lab = None if labels is None else [int(v) for v in labels.cpu()]
    drifts = {n: (None if v is None else [float(x) for x in v.cpu()]) for n, v in (drift or {}).items()}
    room = layout.width - 2 * MARGIN
    for i, y in enumerate(layout.rows):
        for j, x in enumerate(layout.columns):
            canvas[:, y : y + t, x : x + t] = tiles[i, j]
        label = None if lab is None else lab[i]
        wrong = label is not None and pred[i] != label
        parts: list[tuple[str, tuple[float, float, float]]] = [
            (f"#{i}  label {_fmt_class(label)}  ", INK),
            (f"pred {pred[i]}  conf {conf[i]:.2f}", ALERT if wrong else INK),
        ]
        if tgt[i] != (label if label is not None else pred[i]):
            parts.append((f"  expl. {tgt[i]}", MUTED))
        x = MARGIN
        for text, colour in parts:
            shown = fit_text(text, MARGIN + room - x)
            draw_text(canvas, shown, x, y - LINE + 1, colour)
            x += text_width(shown)
        for j, name in enumerate(names):
            values = drifts.get(name)
            x = layout.columns[j + 1]
            if values is None or i >= len(values):
                draw_text(canvas, fit_text(f"{drift_name} -", t), x, y + t + 2, MUTED)
                continue
            over = drift_threshold is not None and values[i] > drift_threshold
            draw_text(canvas, fit_text(f"{drift_name} {values[i]:.2f}", t), x, y + t + 2, ALERT if over else INK)
    _draw_legend(canvas, layout, names, normalizations, colormap, drift_note, drift_threshold)
    return canvas


def _draw_legend(
    canvas: Tensor,
    layout: SheetLayout,
    names: Sequence[str],
    normalizations: Mapping[str, str],
    colormap: str,
    drift_note: str,
    drift_threshold: float | None,
) -> None:
    y = (layout.rows[-1] - LINE + layout.row_height) if layout.rows else MARGIN + 2 * LINE
    x0, x1 = MARGIN, layout.width - MARGIN
    bar = apply_colormap(torch.linspace(0.0, 1.0, max(2, x1 - x0)).expand(12, -1).unsqueeze(0), colormap)[0]
    canvas[:, y : y + 12, x0:x1] = to_uint8(bar)
    draw_text(canvas, "0", x0, y + 14, INK)
    draw_text(canvas, "max", x1 - text_width("max"), y + 14, INK)
    scales = sorted({normalizations.get(n, "max") for n in names})
    per = " or ".join("99th percentile" if s == "percentile" else "max" for s in scales)
    notes = f"heat: |attribution| / {per} of each map."
    if drift_note:
        red = f" Red: over {drift_threshold:g}." if drift_threshold is not None else ""
        notes += f" {drift_note}.{red}"
    for k, line in enumerate(wrap_text(notes, x1 - x0)[:NOTE_LINES]):
        draw_text(canvas, line, x0, y + 14 + (k + 1) * LINE, MUTED)
