"""Attribution maps as pictures: matplotlib's colormaps as lookup tables, normalisation, overlays and image grids,
in torch on the device of the inputs (no host/device synchronisation)."""

from __future__ import annotations

import functools
import math

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.visualize.display import Denormalize, _to_float, to_display_images
from lightning_xai.visualize.display import black_input as black_input  # re-exported, with the two checks below
from lightning_xai.visualize.display import check_denormalize as check_denormalize
from lightning_xai.visualize.display import check_display_channels as check_display_channels

#: suggested colormaps; any name in ``matplotlib.colormaps`` is accepted (case-insensitive where unambiguous)
COLORMAPS: tuple[str, ...] = ("jet", "viridis", "inferno", "turbo")
#: the modes of :func:`normalize_maps`
NORMALIZATIONS: tuple[str, ...] = ("max", "percentile")


def check_colormap(name: str) -> str:
    """The name as ``matplotlib.colormaps`` knows it (case-insensitive where unambiguous), else a ValueError."""
    if isinstance(name, str):
        if name in matplotlib.colormaps:
            return name
        folded = [known for known in matplotlib.colormaps if known.lower() == name.lower()]
        if len(folded) == 1:
            return folded[0]
    raise ValueError(
        f"Unknown `Display.colormap={name!r}`; expected a name of `matplotlib.colormaps`, e.g. {', '.join(COLORMAPS)}."
    )


def _sampled(name: str) -> np.ndarray:
    """matplotlib's colormap at 256 evenly spaced points: ``(256, 3)`` float64 RGB in ``[0, 1]``."""
    return np.asarray(matplotlib.colormaps[check_colormap(name)](np.linspace(0.0, 1.0, 256))[:, :3], dtype=np.float64)


@functools.cache
def lut_uint8(name: str) -> np.ndarray:
    """``(256, 3)`` uint8 RGB table of a colormap, for pictures composed on the CPU (cached, read-only)."""
    table = np.round(_sampled(name) * 255).astype(np.uint8)
    table.flags.writeable = False
    return table


@functools.cache
def device_lut(name: str, device: str) -> Tensor:
    """``(256, 3)`` float32 table of a colormap on ``device`` (cached and shared: never modify it in place)."""
    return torch.from_numpy(_sampled(name)).float().to(device)


def _as_nhw(maps: Tensor, what: str) -> Tensor:
    if maps.dim() == 4 and maps.shape[1] == 1:
        return maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(f"{what} must have shape (N, H, W) or (N, 1, H, W), got {tuple(maps.shape)}.")
    return maps


def apply_colormap(maps: Tensor, name: str = "jet") -> Tensor:
    """Colour ``(N, H, W)`` maps in ``[0, 1]`` (clamped, NaN as 0) at matplotlib's 256 levels: ``(N, 3, H, W)``."""
    v = torch.nan_to_num(_to_float(_as_nhw(maps, "maps")), nan=0.0).clamp(0.0, 1.0)
    return device_lut(name, str(maps.device))[(v * 255.0).round().long()].permute(0, 3, 1, 2).contiguous()


def normalize_maps(maps: Tensor, mode: str = "max", percentile: float = 99.0, eps: float = 1e-12) -> Tensor:
    """``(N, H, W)`` or ``(N, C, H, W)`` maps as ``(N, H, W)`` in ``[0, 1]``: ``|A|`` (summed over channels;
    non-finite as 0) divided per map by its maximum (``"max"``) or, clamped, by its ``percentile``-th percentile
    (``"percentile"``, numpy's ``linear``; the maximum where that is ``<= eps``). All-zero maps stay zero."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"Unknown normalization mode={mode!r}; expected one of {', '.join(NORMALIZATIONS)}.")
    if mode == "percentile" and not (0.0 < float(percentile) <= 100.0):
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}.")
    if maps.dim() not in (3, 4):
        raise ValueError(f"maps must have shape (N, H, W) or (N, C, H, W), got {tuple(maps.shape)}.")
    a = _to_float(maps).abs()
    a = torch.nan_to_num(a.sum(dim=1) if maps.dim() == 4 else a, nan=0.0, posinf=0.0, neginf=0.0)
    if a.numel() == 0:
        return a
    flat = a.reshape(a.shape[0], -1)
    peak = flat.amax(dim=1)
    if mode == "max":
        denom = peak
    else:  # numpy's "linear" percentile from the two order statistics it needs (no sort, no size limit)
        pos = float(percentile) / 100.0 * (flat.shape[1] - 1)
        below, above = math.floor(pos), math.ceil(pos)
        if flat.device.type == "cpu":  # both in one partition (torch's kthvalue: 10x slower, twice)
            part = np.partition(flat.detach().numpy(), sorted({below, above}), axis=1)
            lo, hi = torch.from_numpy(part[:, below]), torch.from_numpy(part[:, above])
        else:
            lo, hi = flat.kthvalue(below + 1, dim=1).values, flat.kthvalue(above + 1, dim=1).values
        denom = lo + (hi - lo) * (pos - below)
    denom = torch.where(denom > eps, denom, peak)
    valid = denom > eps
    out = (flat / torch.where(valid, denom, torch.ones_like(denom))[:, None]).clamp(0.0, 1.0)
    return torch.where(valid[:, None], out, torch.zeros_like(out)).reshape(a.shape)


def overlay(images: Tensor, heat_rgb: Tensor, heat: Tensor, alpha: float = 0.5) -> Tensor:
    """Blend ``(N, 3, H, W)`` coloured heatmaps onto display images of that shape, weighted by the ``(N, H, W)`` heat
    in ``[0, 1]``: ``images * (1 - alpha * heat) + heat_rgb * alpha * heat`` (zero heat shows the image unchanged)."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}.")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}.")
    h = _as_nhw(heat, "heat")
    n, _, hh, ww = images.shape
    if heat_rgb.shape != images.shape or tuple(h.shape) != (n, hh, ww):
        raise ValueError(
            f"heat_rgb {tuple(heat_rgb.shape)} and heat {tuple(h.shape)} do not match images {tuple(images.shape)}; "
            "upsample the heatmaps to the image size first."
        )
    wgt = (torch.nan_to_num(_to_float(h), nan=0.0).clamp(0.0, 1.0) * float(alpha)).unsqueeze(1)
    img = _to_float(images)
    return img * (1.0 - wgt) + _to_float(heat_rgb).to(img.device) * wgt


def make_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """``(N, C, H, W)`` images as one ``(C, GH, GW)`` grid like ``torchvision.utils.make_grid`` (a lone one padded)."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}.")
    n, c, h, w = images.shape
    if n < 1 or int(nrow) < 1 or int(padding) < 0:
        raise ValueError(f"make_grid needs images, nrow >= 1 and padding >= 0; got {n}, {nrow!r}, {padding!r}.")
    p, ncol = int(padding), min(int(nrow), n)
    rows = -(-n // ncol)
    cells = images.new_full((rows * ncol, c, h + p, w + p), pad_value)
    cells[:n, :, :h, :w] = images
    body = cells.reshape(rows, ncol, c, h + p, w + p).permute(2, 0, 3, 1, 4)
    grid = images.new_full((c, rows * (h + p) + p, ncol * (w + p) + p), pad_value)
    grid[:, p:, p:] = body.reshape(c, rows * (h + p), ncol * (w + p))
    return grid


def to_uint8(grid: Tensor) -> Tensor:
    """A float image in ``[0, 1]`` as ``uint8`` (clamped, rounded; NaN becomes 0)."""
    return (torch.nan_to_num(_to_float(grid), nan=0.0).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def render_overlay_grid(
    images: Tensor,
    maps: Tensor,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
    normalization: str = "max",
    nrow: int = 8,
    denormalize: Denormalize = None,
) -> Tensor:
    """``(N, H', W')`` or ``(N, C', H', W')`` attribution maps over their ``(N, C, H, W)`` images (as the model sees
    them, see :func:`to_display_images`) as one ``(3, GH, GW)`` uint8 grid on the images' device: the maps upsampled
    bilinearly, then :func:`normalize_maps` (``"max"`` or ``"percentile"``), :func:`overlay` and :func:`make_grid`.

    Example::

        >>> grid = render_overlay_grid(torch.rand(4, 3, 32, 32), torch.rand(4, 8, 8), nrow=2)
        >>> grid.shape, grid.dtype
        (torch.Size([3, 70, 70]), torch.uint8)
    """
    display = to_display_images(images, denormalize)  # (checks the images' shape)
    if maps.shape[0] != images.shape[0]:
        raise ValueError(f"maps has {maps.shape[0]} entries but images has {images.shape[0]}.")
    if maps.dim() not in (3, 4):
        raise ValueError(f"maps must have shape (N, H, W) or (N, C, H, W), got {tuple(maps.shape)}.")
    m = _to_float(maps.to(display.device))
    m = m[:, None] if m.dim() == 3 else m  # (N, 1, H, W): normalize_maps sums |A| over that one channel
    if m.shape[-2:] != display.shape[-2:]:
        m = F.interpolate(m, display.shape[-2:], mode="bilinear", align_corners=False)
    heat = normalize_maps(m, mode=normalization)
    return to_uint8(make_grid(overlay(display, apply_colormap(heat, colormap), heat, alpha=alpha), nrow=nrow))


def render_heatmap_grid(maps: Tensor, *, colormap: str = "jet", normalization: str = "max", nrow: int = 8) -> Tensor:
    """Coloured attribution maps (:func:`normalize_maps`, ``"max"`` or ``"percentile"``) as one uint8 grid.

    Example::

        >>> render_heatmap_grid(torch.rand(3, 7, 7), colormap="viridis").shape
        torch.Size([3, 11, 29])
    """
    return to_uint8(make_grid(apply_colormap(normalize_maps(maps, mode=normalization), colormap), nrow=nrow))
