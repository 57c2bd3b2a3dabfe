"""Where relevance moved between two attribution maps, read as distributions of ``|A|`` over a coarse grid of regions.

Batched, on any device, in float64 (float32 on MPS).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_xai.functional._common import compute_dtype

__all__ = ["novel_relevance", "peak_region", "quiet_regions", "relevance_distribution"]


def relevance_distribution(maps: Tensor, cells: int = 8) -> Tensor:
    """``|maps|`` ``(N, H, W)`` averaged onto at most ``cells`` × ``cells`` regions, normalised to sum 1 per sample
    (an all-zero map becomes uniform).

    Example::

        >>> relevance_distribution(torch.tensor([[[0.0, 2.0], [0.0, 2.0]]]), cells=2)
        tensor([[[0.0000, 0.5000],
                 [0.0000, 0.5000]]], dtype=torch.float64)
    """
    if maps.ndim != 3:
        raise ValueError(f"`maps` must have shape (N, H, W); got {tuple(maps.shape)}.")
    if cells < 1:
        raise ValueError(f"`cells` must be >= 1, got {cells}.")
    m = torch.nan_to_num(maps.detach().to(compute_dtype(maps.device)).abs(), nan=0.0, posinf=0.0)
    h, w = m.shape[-2:]
    if h > cells or w > cells:
        m = F.adaptive_avg_pool2d(m.unsqueeze(1), (min(h, cells), min(w, cells))).squeeze(1)
    total = m.sum(dim=(1, 2), keepdim=True)
    uniform = torch.full_like(m, 1.0 / (m.shape[1] * m.shape[2]))
    return torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), uniform)


def quiet_regions(previous: Tensor, common: bool = False, older: Tensor | None = None) -> Tensor:
    """Where relevance was below the uniform level in ``previous`` (per sample, or with ``common=True`` in the
    samples' average map) and, with ``older`` (earlier maps of the same shape), there too.

    Example::

        >>> quiet_regions(torch.tensor([[[0.7, 0.1], [0.1, 0.1]]])).tolist()
        [[[False, True], [True, True]]]
    """
    level = 1.0 / (previous.shape[-1] * previous.shape[-2])
    quiet = (previous.mean(dim=0, keepdim=True) if common else previous) < level
    if older is not None and older.shape == previous.shape:
        quiet = quiet & ((older.mean(dim=0, keepdim=True) if common else older) < level)
    return quiet


def novel_relevance(current: Tensor, previous: Tensor, common: bool = False, older: Tensor | None = None) -> Tensor:
    """Per sample, the share of relevance that moved into the :func:`quiet_regions` of ``previous``:
    ``Σ (current − previous)`` over them. Sharpening lowers it; relevance moving to an ignored region raises it.

    Example::

        >>> before = torch.tensor([[[0.7, 0.1], [0.1, 0.1]]])
        >>> after = torch.tensor([[[0.4, 0.1], [0.1, 0.4]]])  # a quiet corner lights up
        >>> round(novel_relevance(after, before).item(), 3), round(novel_relevance(before, before).item(), 3)
        (0.3, 0.0)
    """
    return ((current - previous) * quiet_regions(previous, common, older)).flatten(1).sum(dim=1)


def peak_region(gain: Tensor, level: float = 0.5) -> tuple[int, int, int, int] | None:
    """``(top, left, bottom, right)`` (inclusive, in cells) of the connected blob (edges and corners touch) of cells
    at least ``level`` × the peak that holds the peak; None when nothing gained.

    Example::

        >>> g = torch.zeros(6, 6); g[0, 0] = 0.4; g[1, 1] = 0.3; g[5, 5] = 0.35
        >>> peak_region(g)
        (0, 0, 1, 1)
    """
    if gain.ndim != 2:
        raise ValueError(f"`gain` must have shape (h, w); got {tuple(gain.shape)}.")
    g = torch.nan_to_num(gain.detach().to(compute_dtype(gain.device)), nan=0.0)
    peak = float(g.max()) if g.numel() else 0.0
    if not peak > 0:
        return None
    over = (g >= level * peak).to(g.dtype)[None, None]
    blob = torch.zeros_like(over)
    blob.view(-1)[int(g.argmax())] = 1.0
    while not torch.equal(grown := F.max_pool2d(blob, 3, stride=1, padding=1) * over, blob):  # grow from the peak
        blob = grown
    rows, cols = torch.nonzero(blob[0, 0] > 0, as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())
