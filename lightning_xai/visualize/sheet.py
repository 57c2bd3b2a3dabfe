"""The explanation sheet: one image per evaluation that a person can read at TensorBoard's default zoom.

One row per probe: a caption (probe, label, prediction and confidence), the input, then one overlay per method,
each tile ``tile_size`` pixels (128 by default; small inputs are upscaled with nearest-neighbour so their pixels
stay visible, large ones downscaled with area averaging), the probe's drift under each overlay, and a colour scale
at the bottom. The tiles of all probes and methods are rendered as one batch on the training device and copied to the
CPU once (:func:`prepare_sheet`); the page is composed with numpy and its text drawn with Pillow's default font, on
whichever thread calls the returned function (the background writer's, see :mod:`lightning_xai.visualize.media`).

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

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from lightning_xai.explain import Explanation
from lightning_xai.visualize.render import (
    Denormalize,
    check_colormap,
    device_lut,
    lut_uint8,
    normalize_maps,
    to_display_images,
)

__all__ = ["DEFAULT_TILE_SIZE", "METHOD_TITLES", "SheetLayout", "prepare_sheet", "render_sheet", "sheet_layout"]

DEFAULT_TILE_SIZE = 128
FONT_SIZE = 14
MARGIN, GAP, LINE = 10, 8, 20
NOTE_LINES = 3
#: column titles of the known methods (others show their name)
METHOD_TITLES = {"gradcam": "Grad-CAM", "integrated_gradients": "Int. Gradients"}
INK, MUTED, ALERT = (0.08, 0.08, 0.08), (0.38, 0.38, 0.38), (0.80, 0.05, 0.05)

Colour = tuple[float, float, float]


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's default font (Aileron) at :data:`FONT_SIZE` px."""
    return ImageFont.load_default(size=FONT_SIZE)


def text_width(text: str) -> float:
    """Width in pixels of ``text`` in the sheet's font."""
    return float(_font().getlength(text))


def fit_text(text: str, width: float) -> str:
    """``text`` cut to fit ``width`` pixels, ending in ``..`` when cut.

    Example::

        >>> fit_text("integrated_gradients", 100)
        'integrated_gr..'
    """
    if text_width(text) <= width:
        return text
    cut = text
    while cut and text_width(cut + "..") > width:
        cut = cut[:-1]
    return cut + ".." if cut else ""


def wrap_text(text: str, width: float) -> list[str]:
    """``text`` broken at spaces into lines of at most ``width`` pixels (a longer word is cut).

    Example::

        >>> wrap_text("one two three four", 80)
        ['one two', 'three four']
    """
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(fit_text(word, width))
    return lines


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


def sheet_tiles(display: Tensor, heats: Sequence[Tensor], tile: int, colormap: str, alpha: float = 0.5) -> Tensor:
    """The tiles of a sheet, one batch for all probes and methods: ``(N, tile, 1 + M, tile, 3)`` uint8 on the CPU
    (channels last, the layout of a row of the page): the input, then an overlay per method
    (``image + (colour - image) * alpha * heat``).

    Args:
        display: ``(N, 3, H, W)`` display images in ``[0, 1]`` (:func:`to_display_images`).
        heats: per method, ``(N, H', W')`` heat in ``[0, 1]`` (:func:`normalize_maps` of its display maps).
        tile: side of a tile in pixels.
        colormap: a name of ``matplotlib.colormaps``.
        alpha: the heat's opacity at its maximum.
    """
    shown, top, left = _fit_tiles(display, tile)
    n, _, sh, sw = shown.shape
    image = shown.permute(0, 2, 3, 1)  # (N, sh, sw, 3)
    out = torch.full((n, tile, 1 + len(heats), tile, 3), 255, dtype=torch.uint8, device=shown.device)
    cells = out[:, top : top + sh, :, left : left + sw]  # (N, sh, 1 + M, sw, 3)
    cells[:, :, 0] = image.mul(255.0).add_(0.5)  # values in [0, 1]: + 0.5 then truncation rounds
    if heats:
        sized = [F.interpolate(h.to(shown.device).float().unsqueeze(1), size=(sh, sw), mode="bilinear") for h in heats]
        heat = torch.nan_to_num(torch.cat(sized)[:, 0], nan=0.0).clamp_(0.0, 1.0).view(len(heats), n, sh, sw)
        colour = device_lut(colormap, shown.device)[heat.mul(255.0).round_().long()]  # (M, N, sh, sw, 3)
        blended = colour.sub_(image).mul_(heat.mul_(alpha).unsqueeze(-1)).add_(image)
        cells[:, :, 1:] = blended.permute(1, 2, 0, 3, 4).mul(255.0).add_(0.5)
    return out.cpu()


def _fmt_class(value: int | None) -> str:
    return "-" if value is None else str(value)


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
    drift_threshold: float | None = None,
    drift_note: str = "",
    title: str = "",
    tile_size: int = DEFAULT_TILE_SIZE,
    colormap: str = "jet",
    denormalize: Denormalize = None,
    alpha: float = 0.5,
    display: Tensor | None = None,
    heats: Mapping[str, Tensor] | None = None,
) -> tuple[SheetLayout, Callable[[], np.ndarray]]:
    """The torch part of a sheet (the tiles, rendered as one batch on the inputs' device, copied to the CPU once)
    and a function that composes the page from them: ``(H, W, 3)`` uint8 numpy, drawn with numpy and Pillow only (no
    torch work, so it may run on a background thread without competing for torch's threads).

    Args:
        inputs: ``(P, C, H, W)`` probes as the model sees them.
        results: method -> :class:`~lightning_xai.explain.Explanation` (its ``display`` maps are drawn).
        normalizations: method -> ``"max"`` or ``"percentile"`` (how its maps are scaled to the colour scale).
        predicted, confidence: ``(P,)`` predicted classes (the prediction pass) and their probabilities.
        labels: ``(P,)`` true labels, or None.
        targets: ``(P,)`` the classes the maps explain.
        drift: method -> ``(P,)`` per-probe drift (None or missing: "drift -").
        drift_name: how the drift line names the value (e.g. ``"vs ref"``).
        drift_threshold: drift values above it are drawn in red (the monitor's ``probe_threshold``).
        drift_note: what the drift value is, for the legend.
        title: the first line (run, epoch, step).
        tile_size: side of each tile in pixels (>= 16).
        colormap: a name of ``matplotlib.colormaps`` (e.g. one of :data:`~lightning_xai.visualize.render.COLORMAPS`).
        denormalize: ``(mean, std)``, a callable or None (see
            :func:`~lightning_xai.visualize.render.to_display_images`).
        alpha: the heat's opacity at its maximum.
        display, heats: ``to_display_images(inputs, denormalize)`` and method -> ``normalize_maps(display maps)``,
            when the caller already has them.

    Returns:
        The layout and the function that composes the page.
    """
    if int(tile_size) < 16:
        raise ValueError(f"`tile_size` must be at least 16 pixels, got {tile_size!r}.")
    colormap = check_colormap(colormap)
    names = list(results)
    layout = sheet_layout(int(inputs.shape[0]), len(names), tile_size)
    if display is None:
        display = to_display_images(inputs, denormalize)
    if heats is None:
        heats = {n: normalize_maps(results[n].display, mode=normalizations.get(n, "max")) for n in names}
    tiles = sheet_tiles(display, [heats[n] for n in names], layout.tile, colormap, alpha)
    values = {"pred": predicted, "conf": confidence, "tgt": targets, "lab": labels}
    small = {k: None if v is None else v.detach().cpu() for k, v in values.items()}
    drifts = {n: (None if v is None else v.detach().cpu()) for n, v in (drift or {}).items()}
    scales = sorted({normalizations.get(n, "max") for n in names})
    per = " or ".join("99th percentile" if s == "percentile" else "max" for s in scales)
    notes = f"heat: |attribution| / {per} of each map."
    if drift_note:
        notes += f" {drift_note}." + (f" Red: over {drift_threshold:g}." if drift_threshold is not None else "")

    def compose() -> np.ndarray:
        page = np.full((layout.height, layout.width, 3), 255, dtype=np.uint8)
        _paste_tiles(page, layout, tiles.numpy())
        bar_y = _bar_y(layout)
        bar = lut_uint8(colormap)[np.round(np.linspace(0.0, 255.0, layout.width - 2 * MARGIN)).astype(np.int64)]
        page[bar_y : bar_y + 12, MARGIN : layout.width - MARGIN] = bar
        lists = {k: None if v is None else v.tolist() for k, v in small.items()}
        listed = {n: None if v is None else v.tolist() for n, v in drifts.items()}
        texts = _captions(layout, names, title, lists, listed, drift_name, drift_threshold)
        texts += [(MARGIN, bar_y + 14, "0", INK), (layout.width - MARGIN - text_width("max"), bar_y + 14, "max", INK)]
        lines = wrap_text(notes, layout.width - 2 * MARGIN)[:NOTE_LINES]
        texts += [(MARGIN, bar_y + 14 + (k + 1) * LINE, line, MUTED) for k, line in enumerate(lines)]
        image = Image.fromarray(page)
        draw, font = ImageDraw.Draw(image), _font()
        for x, y, text, colour in texts:
            draw.text((x, y + 1), text, fill=tuple(round(c * 255) for c in colour), font=font)
        return np.array(image)  # writable (a tensor view of it is handed out)

    return layout, compose


def render_sheet(
    inputs: Tensor, results: Mapping[str, Explanation], normalizations: Mapping[str, str], **options: Any
) -> Tensor:
    """Render one evaluation as a sheet (see the module docstring), composed at once; takes the arguments of
    :func:`prepare_sheet`.

    Returns:
        ``(3, H, W)`` uint8 CPU tensor, ``(H, W) == sheet_layout(P, len(results), tile_size).size`` (a view of the
        channels-last page).
    """
    _, compose = prepare_sheet(inputs, results, normalizations, **options)
    return torch.from_numpy(compose()).permute(2, 0, 1)


def _paste_tiles(page: np.ndarray, layout: SheetLayout, tiles: np.ndarray) -> None:
    """Copy ``(N, t, columns, t, 3)`` tiles into their places on the page, in one strided assignment."""
    n, t, columns = tiles.shape[:3]
    if n == 0:
        return
    y0, x0, step = layout.rows[0], layout.columns[0], t + GAP
    band = page[y0 : y0 + n * layout.row_height].reshape(n, layout.row_height, layout.width, 3)
    cells = band[:, :t, x0 : x0 + columns * step].reshape(n, t, columns, step, 3)
    cells[:, :, :, :t] = tiles


def _bar_y(layout: SheetLayout) -> int:
    return (layout.rows[-1] - LINE + layout.row_height) if layout.rows else MARGIN + 2 * LINE


def _captions(
    layout: SheetLayout,
    names: Sequence[str],
    title: str,
    values: Mapping[str, Any],
    drifts: Mapping[str, list[float] | None],
    drift_name: str,
    threshold: float | None,
) -> list[tuple[float, float, str, Colour]]:
    """Where each text of the page goes: the title, column titles, each probe's caption and drift values."""
    t, room = layout.tile, layout.width - 2 * MARGIN
    heads = ["input"] + [METHOD_TITLES.get(n, n) for n in names]
    out: list[tuple[float, float, str, Colour]] = [(MARGIN, MARGIN, fit_text(title, room), INK)]
    out += [(x, MARGIN + LINE, fit_text(head, t), MUTED) for x, head in zip(layout.columns, heads, strict=True)]
    pred, conf, tgt, lab = values["pred"], values["conf"], values["tgt"], values["lab"]
    for i, y in enumerate(layout.rows):
        label = None if lab is None else lab[i]
        parts: list[tuple[str, Colour]] = [
            (f"#{i}   label {_fmt_class(label)}   ", INK),
            (f"pred {pred[i]}   conf {conf[i]:.2f}", ALERT if label is not None and pred[i] != label else INK),
        ]
        if tgt[i] != (label if label is not None else pred[i]):
            parts.append((f"   expl. {tgt[i]}", MUTED))
        x: float = MARGIN
        for text, colour in parts:
            shown = fit_text(text, MARGIN + room - x)
            out.append((x, y - LINE, shown, colour))
            x += text_width(shown)
        for j, name in enumerate(names):
            drift = drifts.get(name)
            if drift is None or i >= len(drift):
                out.append((layout.columns[j + 1], y + t + 1, fit_text(f"{drift_name} -", t), MUTED))
                continue
            colour = ALERT if threshold is not None and drift[i] > threshold else INK
            out.append((layout.columns[j + 1], y + t + 1, fit_text(f"{drift_name} {drift[i]:.2f}", t), colour))
    return out
