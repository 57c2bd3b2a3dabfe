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
from collections.abc import Callable, Sequence
from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.visualize.colormaps import COLORMAP_NAMES, LUT_HEX

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

Denormalize: TypeAlias = tuple[Sequence[float] | float, Sequence[float] | float] | Callable[[Tensor], Tensor] | None

_LUT_CACHE: dict[tuple[str, str], Tensor] = {}


def check_colormap(name: str) -> str:
    """Return the canonical colormap name, or raise a ValueError naming ``colormap`` and the choices."""
    key = name.lower() if isinstance(name, str) else None
    if key not in LUT_HEX:
        raise ValueError(f"Unknown `colormap={name!r}`; expected one of {', '.join(COLORMAPS)}.")
    return key


_check_colormap = check_colormap


def check_denormalize(denormalize: Denormalize) -> Denormalize:
    """``denormalize`` normalised: None, a callable, or ``(mean, std)`` as two 1-D float32 tensors (from numbers,
    lists, tuples, numpy arrays or tensors; given as a tuple or a list). Raises a ValueError naming ``denormalize``
    for anything else, for NaN/Inf, for a zero std, or for mean and std of different lengths (neither of them 1).

    Example::

        >>> [t.tolist() for t in check_denormalize([[0.5, 0.5], 0.25])]
        [[0.5, 0.5], [0.25]]
    """
    if denormalize is None or callable(denormalize):
        return denormalize
    fix = (
        "pass (mean, std) sequences (one value per channel or one for all), a callable mapping model inputs to "
        "[0, 1] images, or None."
    )
    if not isinstance(denormalize, (tuple, list)) or len(denormalize) != 2:
        raise ValueError(f"`denormalize={denormalize!r}` is not supported; {fix}")
    parts = []
    for label, part in zip(("mean", "std"), denormalize, strict=True):
        try:
            if isinstance(part, (str, bytes)):
                raise TypeError("a string")
            t = part.detach() if isinstance(part, Tensor) else torch.as_tensor(part)
            if t.is_complex() or t.dtype == torch.bool or t.device.type == "meta":
                raise TypeError(str(t.dtype))
            t = t.to("cpu", torch.float32).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"`denormalize` {label} {part!r} is not numbers ({err}); {fix}") from None
        if t.numel() == 0 or not bool(torch.isfinite(t).all()):
            raise ValueError(f"`denormalize` {label} must be finite numbers, got {part!r}; {fix}")
        parts.append(t)
    mean, std = parts
    if bool((std == 0).any()):
        raise ValueError(f"`denormalize` std must be non-zero (the inputs are divided by it), got {std.tolist()}.")
    if mean.numel() != std.numel() and 1 not in (mean.numel(), std.numel()):
        raise ValueError(
            f"`denormalize` has {mean.numel()} means but {std.numel()} stds; give one of each per channel (or one "
            "for all)."
        )
    return (mean, std)  # type: ignore[return-value]  # tensors are sequences of floats here


def check_display_channels(denormalize: Denormalize, channels: int, render: bool = True) -> None:
    """Raise a ValueError naming ``denormalize`` when ``(mean, std)`` does not fit images with ``channels``
    channels, or (``render``) when such images cannot be displayed: 1 (grey) or 3 (RGB) channels after
    ``denormalize``. A callable is checked by calling it (see the setup dry run)."""
    if isinstance(denormalize, (tuple, list)):
        for label, part in zip(("means", "stds"), denormalize, strict=True):
            count = torch.as_tensor(part).numel()
            if count not in (1, channels):
                raise ValueError(
                    f"`denormalize` has {count} {label} but the probes have {channels} channel"
                    f"{'s' if channels != 1 else ''}; give one per channel (or one for all), e.g. the mean and std "
                    "of the `Normalize` in your validation transform."
                )
    if render and denormalize is None and channels not in (1, 3):
        raise ValueError(
            f"The probes have {channels} channels and images are shown with 1 (grey) or 3 (RGB): pass "
            "`denormalize=` a callable that maps the probes to 1 or 3 channels in [0, 1], e.g. "
            "`denormalize=lambda x: x[:, :3]`."
        )


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


def black_input(denormalize: Denormalize) -> Tensor | None:
    """The model input that displays as black, ``-mean / std`` shaped ``(C, 1, 1)``, for ``denormalize=(mean,
    std)``; None for a callable or None (the inverse is unknown; zeros are black for unnormalised inputs).

    It is Integrated Gradients' default baseline when ``denormalize`` is given: the zero input of a
    normalised model is the *mean* image, which leaves the background with attribution of its own.

    Example::

        >>> black_input(([0.5, 0.25], [0.25, 0.5])).flatten().tolist()
        [-2.0, -0.5]
    """
    if not isinstance(denormalize, (tuple, list)) or len(denormalize) != 2:
        return None
    mean = torch.as_tensor(denormalize[0], dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.as_tensor(denormalize[1], dtype=torch.float32).reshape(-1, 1, 1)
    return -mean / std


def to_display_images(images: Tensor, denormalize: Denormalize = None) -> Tensor:
    """Convert probe images, as the model sees them, into displayable RGB in ``[0, 1]``.

    1. ``denormalize=(mean, std)``: per channel ``x * std + mean`` (sequences of length ``C`` or 1);
       a callable is applied as is; ``None`` leaves the values alone.
    2. Single-channel images are repeated to 3 channels.
    3. With ``denormalize=None`` and any value outside ``[0, 1]`` in the batch, each image is min-max
       scaled independently (a constant image becomes 0.5 grey); otherwise values are clamped to
       ``[0, 1]``. Non-finite values count as 0.

    Args:
        images: ``(N, C, H, W)`` tensor with ``C`` in ``(1, 3)`` (after ``denormalize``).
        denormalize: ``(mean, std)``, a callable ``Tensor -> Tensor`` or ``None``.

    Returns:
        ``(N, 3, H, W)`` float tensor in ``[0, 1]`` on the device of ``images``.

    Raises:
        ValueError: If the images are not 4-D, have a channel count other than 1 or 3, or
            ``mean``/``std`` do not match the channel count.

    Example::

        >>> x = torch.zeros(2, 3, 4, 4)  # normalised with mean 0.5, std 0.25
        >>> out = to_display_images(x, denormalize=([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]))
        >>> out.shape, out.unique().tolist()
        (torch.Size([2, 3, 4, 4]), [0.5])
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}.")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}.")
    x = _to_float(images)
    if isinstance(denormalize, (tuple, list)):
        if len(denormalize) != 2:
            raise ValueError("denormalize must be a (mean, std) pair or a callable.")
        c = x.shape[1]
        stats = []
        for label, seq in zip(("mean", "std"), denormalize, strict=True):
            t = torch.as_tensor(seq, dtype=x.dtype, device=x.device).reshape(-1)
            if t.numel() not in (1, c):
                raise ValueError(f"denormalize {label} has {t.numel()} values but the images have {c} channels.")
            stats.append(t.reshape(1, -1, 1, 1))
        x = x * stats[1] + stats[0]
    elif callable(denormalize):
        out = denormalize(x)
        if not isinstance(out, Tensor) or out.dim() != 4:
            raise ValueError("denormalize callable must return an (N, C, H, W) tensor.")
        x = _to_float(out)
    elif denormalize is not None:
        raise TypeError(f"denormalize must be (mean, std), a callable or None, got {type(denormalize).__name__}.")
    c = x.shape[1]
    if c not in (1, 3):
        raise ValueError(
            f"Cannot display images with {c} channels: expected 1 (grayscale) or 3 (RGB). "
            "Pass a denormalize callable that maps them to 1 or 3 channels."
        )
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if denormalize is not None or x.numel() == 0:
        return x.clamp(0.0, 1.0)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    lo = flat.amin(dim=1).reshape(n, 1, 1, 1)
    hi = flat.amax(dim=1).reshape(n, 1, 1, 1)
    out_of_range = (flat.amin() < 0.0) | (flat.amax() > 1.0)  # stays a device tensor: no host sync
    span = hi - lo
    const = span <= 1e-12
    scaled = (x - lo) / torch.where(const, torch.ones_like(span), span)
    scaled = torch.where(const, torch.full_like(x, 0.5), scaled)
    return torch.where(out_of_range, scaled, x.clamp(0.0, 1.0))


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


def make_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile a batch of images into one image, row-major, like ``torchvision.utils.make_grid``.

    The result has shape ``(C, rows * (H + padding) + padding, ncol * (W + padding) + padding)`` with
    ``ncol = min(nrow, N)`` and ``rows = ceil(N / ncol)``; unused cells are filled with ``pad_value``.
    Unlike torchvision, a single image is padded too (consistent borders for any ``N``) and
    single-channel images stay single-channel. Vectorised (no loop over images), any device/dtype.

    Args:
        images: ``(N, C, H, W)`` tensor, ``N >= 1``.
        nrow: Maximum number of images per row.
        padding: Pixels between (and around) the images.
        pad_value: Fill value of the padding.

    Returns:
        ``(C, GH, GW)`` tensor with the dtype and device of ``images``.

    Raises:
        ValueError: For a non 4-D or empty batch, ``nrow < 1`` or ``padding < 0``.

    Example::

        >>> make_grid(torch.zeros(5, 3, 4, 4), nrow=3, padding=2).shape
        torch.Size([3, 14, 20])
    """
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}.")
    n, c, h, w = images.shape
    if n < 1:
        raise ValueError("make_grid needs at least one image.")
    if int(nrow) < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow!r}.")
    if int(padding) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}.")
    p = int(padding)
    ncol = min(int(nrow), n)
    rows = -(-n // ncol)
    cells = images.new_full((rows * ncol, c, h + p, w + p), pad_value)
    cells[:n, :, :h, :w] = images
    body = cells.reshape(rows, ncol, c, h + p, w + p).permute(2, 0, 3, 1, 4)
    body = body.reshape(c, rows * (h + p), ncol * (w + p))
    grid = images.new_full((c, rows * (h + p) + p, ncol * (w + p) + p), pad_value)
    grid[:, p:, p:] = body
    return grid


def to_uint8(grid: Tensor) -> Tensor:
    """Convert a float image in ``[0, 1]`` to ``uint8`` (clamped, rounded; NaN becomes 0).

    Args:
        grid: Float tensor of any shape, nominally in ``[0, 1]``.

    Returns:
        ``uint8`` tensor of the same shape and device.

    Example::

        >>> to_uint8(torch.tensor([0.0, 0.5, 1.0, 2.0])).tolist()
        [0, 128, 255, 255]
    """
    x = torch.nan_to_num(_to_float(grid), nan=0.0).clamp(0.0, 1.0)
    return (x * 255.0).round().to(torch.uint8)


def _resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize (N, H', W') / (N, C, H', W') maps to ``size`` if needed (float32)."""
    m = _to_float(maps)
    squeeze = m.dim() == 3
    if squeeze:
        m = m.unsqueeze(1)
    elif m.dim() != 4:
        raise ValueError(f"maps must have shape (N, H, W) or (N, C, H, W), got {tuple(maps.shape)}.")
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return m[:, 0] if squeeze else m


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
    """Render attribution maps over their images as one ``uint8`` grid (for TensorBoard).

    Pipeline: upsample ``maps`` bilinearly (``align_corners=False``) to the image size if needed →
    :func:`normalize_maps` → :func:`apply_colormap` → :func:`overlay` on :func:`to_display_images`
    → :func:`make_grid` → :func:`to_uint8`. Everything stays on the device of ``images``.

    Args:
        images: ``(N, C, H, W)`` probe images as the model sees them (``C`` in 1 or 3).
        maps: ``(N, H', W')``, ``(N, 1, H', W')`` or ``(N, C', H', W')`` attributions for those images.
        colormap: One of :data:`COLORMAPS`.
        alpha: Maximum heatmap opacity in ``[0, 1]``.
        normalization: ``"max"`` or ``"percentile"`` (99th), see :func:`normalize_maps`.
        nrow: Images per grid row.
        denormalize: See :func:`to_display_images`.

    Returns:
        ``(3, GH, GW)`` ``uint8`` tensor (CHW) on the device of ``images``.

    Raises:
        ValueError: For mismatched batch sizes or any invalid argument of the steps above.

    Example::

        >>> grid = render_overlay_grid(torch.rand(4, 3, 32, 32), torch.rand(4, 8, 8), nrow=2)
        >>> grid.shape, grid.dtype
        (torch.Size([3, 70, 70]), torch.uint8)
    """
    _check_colormap(colormap)
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}.")
    if maps.shape[0] != images.shape[0]:
        raise ValueError(f"maps has {maps.shape[0]} entries but images has {images.shape[0]}.")
    display = to_display_images(images, denormalize)
    size = (int(display.shape[-2]), int(display.shape[-1]))
    heat = normalize_maps(_resize_maps(maps.to(display.device), size), mode=normalization)
    blended = overlay(display, apply_colormap(heat, colormap), heat, alpha=alpha)
    return to_uint8(make_grid(blended, nrow=nrow, padding=2, pad_value=1.0))


def render_heatmap_grid(
    maps: Tensor,
    *,
    colormap: str = "jet",
    normalization: str = "max",
    nrow: int = 8,
) -> Tensor:
    """Render colourised attribution maps alone as one ``uint8`` grid.

    Args:
        maps: ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, C, H, W)`` attributions.
        colormap: One of :data:`COLORMAPS`.
        normalization: ``"max"`` or ``"percentile"`` (99th), see :func:`normalize_maps`.
        nrow: Maps per grid row.

    Returns:
        ``(3, GH, GW)`` ``uint8`` tensor (CHW) on the device of ``maps``.

    Example::

        >>> render_heatmap_grid(torch.rand(3, 7, 7), colormap="viridis").shape
        torch.Size([3, 11, 29])
    """
    _check_colormap(colormap)
    heat = normalize_maps(maps, mode=normalization)
    return to_uint8(make_grid(apply_colormap(heat, colormap), nrow=nrow, padding=2, pad_value=1.0))
