"""Turn attribution maps into pictures: colormaps, normalisation, overlays and image grids.

The maps are rendered in ``torch`` on whatever device the input tensors live on, so the rendering can stay on
the training GPU; only the final ``uint8`` grid needs to be copied to the CPU. No function here forces a
host/device synchronisation. The colour tables are matplotlib's (``matplotlib.colormaps``), sampled once per
(name, device) into a 256-entry lookup table.

Typical use::

    grid = render_overlay_grid(probe_images, attributions, colormap="jet", nrow=8)
    writer.add_image("xai/overlay", grid.cpu(), global_step=epoch)  # CHW uint8
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
import numpy as np
import torch
from torch import Tensor

from lightning_xai.visualize.display import (  # noqa: F401 - re-exported: the input side of the pictures
    Denormalize,
    _to_float,
    black_input,
    check_denormalize,
    check_display_channels,
    to_display_images,
)

__all__ = [
    "COLORMAPS",
    "NORMALIZATIONS",
    "apply_colormap",
    "colormap_lut",
    "make_grid",
    "normalize_maps",
    "one_torch_thread",
    "overlay",
    "render_heatmap_grid",
    "render_overlay_grid",
    "to_display_images",
    "to_uint8",
]

COLORMAPS: tuple[str, ...] = ("jet", "viridis", "inferno", "turbo")
"""Suggested colormaps; any name in ``matplotlib.colormaps`` is accepted (case-insensitive where unambiguous)."""

NORMALIZATIONS: tuple[str, ...] = ("max", "percentile")
"""Modes accepted by :func:`normalize_maps`."""


_LUT_CACHE: dict[tuple[str, str], Tensor] = {}
_UINT8_CACHE: dict[str, np.ndarray] = {}


@contextmanager
def one_torch_thread(device: torch.device | str = "cpu") -> Iterator[None]:
    """torch's intra-op threads set to 1 for the block on the CPU (restored after; nothing changes for a GPU device).

    The pictures are many small tensor operations: on a busy machine each parallel one waits for a descheduled
    partner thread (measured: 10-18 ms per evaluation with one thread, 60-680 ms with two while other processes held
    the cores). ``torch.set_num_threads`` is process-wide: use it only on the training thread, inside a hook.
    """
    threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_colormap(name: str) -> str:
    """Return the name as ``matplotlib.colormaps`` knows it, or raise a ValueError naming ``colormap``.

    Example::

        >>> check_colormap("JET"), check_colormap("RdBu")
        ('jet', 'RdBu')
    """
    if isinstance(name, str):
        if name in matplotlib.colormaps:
            return name
        folded = [known for known in matplotlib.colormaps if known.lower() == name.lower()]
        if len(folded) == 1:
            return folded[0]
    raise ValueError(
        f"Unknown `colormap={name!r}`; expected a name of `matplotlib.colormaps`, e.g. {', '.join(COLORMAPS)}."
    )


def lut_uint8(name: str) -> np.ndarray:
    """``(256, 3)`` uint8 RGB table of a colormap (numpy, for pictures composed on the CPU); cached."""
    key = check_colormap(name)
    table = _UINT8_CACHE.get(key)
    if table is None:
        table = np.round(_sampled(key) * 255).astype(np.uint8)
        table.flags.writeable = False  # shared
        _UINT8_CACHE[key] = table
    return table


def _sampled(name: str) -> np.ndarray:
    """matplotlib's colormap sampled at 256 evenly spaced points: ``(256, 3)`` float64 RGB in ``[0, 1]``."""
    return np.asarray(matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3], dtype=np.float64)


def device_lut(name: str, device: torch.device) -> Tensor:
    """Cached (256, 3) float32 LUT on ``device`` (shared: never modify it in place)."""
    cache_key = (check_colormap(name), str(device))
    lut = _LUT_CACHE.get(cache_key)
    if lut is None:
        lut = _LUT_CACHE[cache_key] = torch.from_numpy(_sampled(cache_key[0])).float().to(device)
    return lut


def colormap_lut(name: str, device: torch.device | str | None = None) -> Tensor:
    """Return the 256-entry RGB lookup table of a colormap.

    The table is matplotlib's, ``matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3]``, in float32.

    Args:
        name: A name of ``matplotlib.colormaps`` (e.g. one of :data:`COLORMAPS`).
        device: Device of the returned tensor (default CPU). Tables are cached per (name, device).

    Returns:
        A fresh ``(256, 3)`` float32 tensor with values in ``[0, 1]``.

    Raises:
        ValueError: If ``name`` is not a known colormap.

    Example::

        >>> lut = colormap_lut("viridis")
        >>> lut.shape, lut.dtype
        (torch.Size([256, 3]), torch.float32)
        >>> (lut[0] * 255).round().tolist()
        [68.0, 1.0, 84.0]
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return device_lut(name, dev).clone()


def _as_nhw(maps: Tensor, what: str) -> Tensor:
    if not isinstance(maps, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(maps).__name__}.")
    if maps.dim() == 4 and maps.shape[1] == 1:
        return maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(f"{what} must have shape (N, H, W) or (N, 1, H, W), got {tuple(maps.shape)}.")
    return maps


def apply_colormap(maps: Tensor, name: str = "jet") -> Tensor:
    """Colourise scalar maps with a 256-entry colormap lookup table.

    Values are clamped to ``[0, 1]`` (NaN counts as 0) and looked up at index ``round(v * 255)``,
    which reproduces ``matplotlib.colormaps[name](v)`` (float32) for the same 256-level quantisation.

    Args:
        maps: ``(N, H, W)`` (or ``(N, 1, H, W)``) float tensor, nominally in ``[0, 1]``.
        name: A name of ``matplotlib.colormaps``.

    Returns:
        ``(N, 3, H, W)`` float32 tensor in ``[0, 1]`` on the device of ``maps``.

    Raises:
        ValueError: For an unknown colormap or a badly shaped ``maps``.

    Example::

        >>> rgb = apply_colormap(torch.tensor([[[0.0, 1.0]]]), "jet")
        >>> rgb.shape
        torch.Size([1, 3, 1, 2])
        >>> (rgb[0, :, 0, 0] * 255).round().tolist()  # jet starts dark blue
        [0.0, 0.0, 128.0]
    """
    lut = device_lut(name, maps.device)
    m = _as_nhw(maps, "maps")
    v = torch.nan_to_num(_to_float(m), nan=0.0).clamp(0.0, 1.0)
    idx = (v * 255.0).round().long()
    return lut[idx].permute(0, 3, 1, 2).contiguous()


def _percentile_rows(x: Tensor, q: float) -> Tensor:
    """Per-row ``q``-th percentile of a 2-D tensor, numpy's default ``linear`` interpolation.

    Selects the two order statistics it needs with ``torch.topk`` from the nearer end (no full sort, and no
    16M-element input limit as in ``torch.quantile``).
    """
    n = x.shape[1]
    pos = (q / 100.0) * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    if n - lo <= hi + 1:  # the upper end is nearer: the n - lo largest, descending
        top = torch.topk(x, n - lo, dim=1).values
        a, b = top[:, n - lo - 1], top[:, n - hi - 1]
    else:  # the hi + 1 smallest, ascending
        low = torch.topk(x, hi + 1, dim=1, largest=False).values
        a, b = low[:, lo], low[:, hi]
    return a + (b - a) * frac


def normalize_maps(maps: Tensor, mode: str = "max", percentile: float = 99.0, eps: float = 1e-12) -> Tensor:
    """Scale attribution maps per image into ``[0, 1]``, using their magnitude ``|A|``.

    ``(N, C, H, W)`` attributions with ``C > 1`` are first reduced to ``(N, H, W)`` by summing ``|A|``
    over channels; ``(N, 1, H, W)`` is squeezed. Non-finite values count as 0.

    * ``"max"``: divide each map by its own maximum.
    * ``"percentile"``: divide by the per-image ``percentile``-th percentile of ``|A|`` (linear
      interpolation, like ``numpy.percentile``) and clamp to 1; robust when a few pixels dominate
      (typical for Integrated Gradients). If that percentile is ``<= eps`` while the map is not
      all zero (very sparse maps), the maximum is used instead.

    Maps whose maximum is ``<= eps`` (e.g. all zero) become all zeros, never NaN.

    Args:
        maps: ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, C, H, W)`` attributions (any sign).
        mode: ``"max"`` or ``"percentile"``.
        percentile: Percentile in ``(0, 100]`` used by ``mode="percentile"``.
        eps: Denominators ``<= eps`` are treated as zero.

    Returns:
        ``(N, H, W)`` float tensor in ``[0, 1]`` on the device of ``maps``.

    Raises:
        ValueError: For an unknown ``mode``, a ``percentile`` outside ``(0, 100]`` or a bad shape.

    Example::

        >>> m = torch.tensor([[[-2.0, 1.0], [0.0, 4.0]]])
        >>> normalize_maps(m).tolist()
        [[[0.5, 0.25], [0.0, 1.0]]]
        >>> normalize_maps(torch.zeros(1, 2, 2)).tolist()
        [[[0.0, 0.0], [0.0, 0.0]]]
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"Unknown normalization mode={mode!r}; expected one of {', '.join(NORMALIZATIONS)}.")
    if mode == "percentile" and not (0.0 < float(percentile) <= 100.0):
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}.")
    if not isinstance(maps, Tensor):
        raise TypeError(f"maps must be a torch.Tensor, got {type(maps).__name__}.")
    if maps.dim() == 4:
        a = _to_float(maps).abs().sum(dim=1)
    elif maps.dim() == 3:
        a = _to_float(maps).abs()
    else:
        raise ValueError(f"maps must have shape (N, H, W) or (N, C, H, W), got {tuple(maps.shape)}.")
    a = torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    n, h, w = a.shape
    if a.numel() == 0:
        return a
    flat = a.reshape(n, h * w)
    peak = flat.amax(dim=1)
    if mode == "max":
        denom = peak
    else:
        denom = _percentile_rows(flat, float(percentile))
        denom = torch.where(denom > eps, denom, peak)
    valid = denom > eps
    safe = torch.where(valid, denom, torch.ones_like(denom))
    out = (flat / safe[:, None]).clamp(0.0, 1.0)
    out = torch.where(valid[:, None], out, torch.zeros_like(out))
    return out.reshape(n, h, w)


def overlay(images: Tensor, heat_rgb: Tensor, heat: Tensor, alpha: float = 0.5) -> Tensor:
    """Blend colourised heatmaps onto images, weighted by the heat itself.

    ``out = images * (1 - alpha * heat) + heat_rgb * (alpha * heat)``, so a pixel with zero attribution
    shows the image unchanged and ``alpha`` is the opacity of the hottest pixels.

    Args:
        images: ``(N, 3, H, W)`` display images in ``[0, 1]`` (see :func:`to_display_images`).
        heat_rgb: ``(N, 3, H, W)`` colourised heatmaps (see :func:`apply_colormap`).
        heat: ``(N, H, W)`` (or ``(N, 1, H, W)``) normalised heat in ``[0, 1]`` (clamped).
        alpha: Maximum heatmap opacity in ``[0, 1]``.

    Returns:
        ``(N, 3, H, W)`` float tensor in ``[0, 1]``.

    Raises:
        ValueError: If the shapes disagree (upsample the heatmaps to the image size first) or
            ``alpha`` is outside ``[0, 1]``.

    Example::

        >>> img = torch.full((1, 3, 2, 2), 0.5)
        >>> heat = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
        >>> out = overlay(img, apply_colormap(heat), heat, alpha=1.0)
        >>> torch.equal(out[0, :, 0, 0], img[0, :, 0, 0])
        True
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}.")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}.")
    if heat_rgb.shape != images.shape:
        raise ValueError(
            f"heat_rgb shape {tuple(heat_rgb.shape)} does not match images shape {tuple(images.shape)}; "
            "upsample the heatmaps to the image size first."
        )
    h = _as_nhw(heat, "heat")
    n, _, hh, ww = images.shape
    if tuple(h.shape) != (n, hh, ww):
        raise ValueError(
            f"heat shape {tuple(h.shape)} does not match images (N, H, W) = {(n, hh, ww)}; "
            "upsample the heatmaps to the image size first."
        )
    wgt = (torch.nan_to_num(_to_float(h), nan=0.0).clamp(0.0, 1.0) * float(alpha)).unsqueeze(1)
    img = _to_float(images)
    return img * (1.0 - wgt) + _to_float(heat_rgb).to(img.device) * wgt


from lightning_xai.visualize.grid import (  # noqa: E402 - re-exported: grids build on the functions above
    make_grid,
    render_heatmap_grid,
    render_overlay_grid,
    to_uint8,
)
