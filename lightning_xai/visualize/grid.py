"""Image grids of probes and their overlays or heatmaps, rendered on the maps' device; one ``uint8`` copy to the
CPU at the end."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.visualize.display import Denormalize, _to_float, to_display_images
from lightning_xai.visualize.render import apply_colormap, check_colormap, normalize_maps, overlay


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
    check_colormap(colormap)
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
    check_colormap(colormap)
    heat = normalize_maps(maps, mode=normalization)
    return to_uint8(make_grid(apply_colormap(heat, colormap), nrow=nrow, padding=2, pad_value=1.0))
