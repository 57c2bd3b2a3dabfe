"""Turn attribution maps into pictures: colormaps, normalisation, overlays and image grids.

Everything here is pure ``torch`` (no matplotlib / PIL / numpy / torchvision) and runs on whatever
device the input tensors live on, so the rendering can stay on the training GPU; only the final
``uint8`` grid needs to be copied to the CPU (e.g. for ``SummaryWriter.add_image``). No function
here forces a host/device synchronisation.

Typical use::

    grid = render_overlay_grid(probe_images, attributions, colormap="jet", nrow=8)
    writer.add_image("xai/overlay", grid.cpu(), global_step=epoch)  # CHW uint8
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_xai.visualize.colormaps import COLORMAP_NAMES, LUT_HEX
from lightning_xai.visualize.display import (  # noqa: F401 - re-exported: the input side of the pictures
    Denormalize,
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
    "overlay",
    "render_heatmap_grid",
    "render_overlay_grid",
    "to_display_images",
    "to_uint8",
]

COLORMAPS: tuple[str, ...] = tuple(COLORMAP_NAMES)
"""Names accepted by :func:`colormap_lut` / :func:`apply_colormap` (matplotlib's 256-entry tables)."""

NORMALIZATIONS: tuple[str, ...] = ("max", "percentile")
"""Modes accepted by :func:`normalize_maps`."""


_LUT_CACHE: dict[tuple[str, str], Tensor] = {}


def check_colormap(name: str) -> str:
    """Return the canonical colormap name, or raise a ValueError naming ``colormap`` and the choices."""
    key = name.lower() if isinstance(name, str) else None
    if key not in LUT_HEX:
        raise ValueError(f"Unknown `colormap={name!r}`; expected one of {', '.join(COLORMAPS)}.")
    return key


_check_colormap = check_colormap


def _lut(name: str, device: torch.device) -> Tensor:
    """Cached (256, 3) float32 LUT on ``device`` (shared: never modify it in place)."""
    key = _check_colormap(name)
    cache_key = (key, str(device))
    lut = _LUT_CACHE.get(cache_key)
    if lut is None:
        raw = torch.tensor(list(bytes.fromhex(LUT_HEX[key])), dtype=torch.float32).view(256, 3)
        lut = (raw / 255.0).to(device)
        _LUT_CACHE[cache_key] = lut
    return lut


def colormap_lut(name: str, device: torch.device | str | None = None) -> Tensor:
    """Return the 256-entry RGB lookup table of a colormap.

    The tables are matplotlib's (``matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3]``)
    quantised to 8 bits, stored in :mod:`lightning_xai.visualize.colormaps`; matplotlib is not needed at run time.

    Args:
        name: One of :data:`COLORMAPS` (``"jet"``, ``"viridis"``, ``"inferno"``, ``"turbo"``),
            case-insensitive.
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
    return _lut(name, dev).clone()


def _as_nhw(maps: Tensor, what: str) -> Tensor:
    if not isinstance(maps, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(maps).__name__}.")
    if maps.dim() == 4 and maps.shape[1] == 1:
        return maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(f"{what} must have shape (N, H, W) or (N, 1, H, W), got {tuple(maps.shape)}.")
    return maps


def _to_float(x: Tensor) -> Tensor:
    return x if x.is_floating_point() and x.dtype in (torch.float32, torch.float64) else x.float()


def apply_colormap(maps: Tensor, name: str = "jet") -> Tensor:
    """Colourise scalar maps with a 256-entry colormap lookup table.

    Values are clamped to ``[0, 1]`` (NaN counts as 0) and looked up at index ``round(v * 255)``,
    which reproduces ``matplotlib.colormaps[name](v)`` for the same 256-level quantisation.

    Args:
        maps: ``(N, H, W)`` (or ``(N, 1, H, W)``) float tensor, nominally in ``[0, 1]``.
        name: Colormap name, one of :data:`COLORMAPS`.

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
    lut = _lut(name, maps.device)
    m = _as_nhw(maps, "maps")
    v = torch.nan_to_num(_to_float(m), nan=0.0).clamp(0.0, 1.0)
    idx = (v * 255.0).round().long()
    return lut[idx].permute(0, 3, 1, 2).contiguous()


def _percentile_rows(x: Tensor, q: float) -> Tensor:
    """Per-row ``q``-th percentile of a 2-D tensor, numpy's default ``linear`` interpolation.

    Implemented with a sort instead of ``torch.quantile`` (no 16M-element input limit).
    """
    n = x.shape[1]
    pos = (q / 100.0) * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    s = torch.sort(x, dim=1).values
    a, b = s[:, lo], s[:, hi]
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
