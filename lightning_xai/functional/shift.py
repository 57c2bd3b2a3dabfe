"""Where relevance moved: ``|A|`` as distributions over a coarse grid of regions; batched, float64 (float32 on MPS)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_xai.functional._common import compute_dtype


def relevance_distribution(maps: Tensor, cells: int = 8) -> Tensor:
    """``|maps|`` ``(N, H, W)`` averaged onto at most ``cells`` × ``cells`` regions, summing to 1 per sample."""
    if maps.ndim != 3:
        raise ValueError(f"`maps` must have shape (N, H, W); got {tuple(maps.shape)}.")
    m = torch.nan_to_num(maps.detach().to(compute_dtype(maps.device)).abs(), nan=0.0, posinf=0.0)
    h, w = m.shape[-2:]
    if h > cells or w > cells:
        m = F.adaptive_avg_pool2d(m.unsqueeze(1), (min(h, cells), min(w, cells))).squeeze(1)
    total = m.sum(dim=(1, 2), keepdim=True)
    return torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), 1.0 / (m.shape[1] * m.shape[2]))


def blank_maps(maps: Tensor) -> Tensor:
    """``(N,)``: which maps ``(N, ...)`` hold no finite relevance (all zero: a Grad-CAM whose ReLU cuts every cell,
    common in ViTs and at initialisation). :func:`relevance_distribution` reads them as uniform; a detector that
    compares distributions should treat them as saying nowhere (the ``ShiftDetector``: such a probe did not move)."""
    return ~(torch.nan_to_num(maps.detach().abs(), nan=0.0, posinf=0.0).flatten(1).sum(dim=1) > 0)


def cells_to_pixels(cells: Tensor, size: tuple[int, int]) -> Tensor:
    """``(..., h, w)`` cells to ``(..., H, W)`` pixels ``size``, each pixel taking the cell it falls in (as adaptive
    average pooling splits the pixels into cells)."""
    h, w = cells.shape[-2:]
    return cells[..., torch.arange(size[0]) * h // size[0], :][..., torch.arange(size[1]) * w // size[1]]


def quiet_regions(previous: Tensor, common: bool = False, older: Tensor | None = None) -> Tensor:
    """Where relevance was below the uniform level in ``previous`` (``common``: in the mean map), and in ``older``."""
    level = 1.0 / (previous.shape[-1] * previous.shape[-2])
    quiet = (previous.mean(dim=0, keepdim=True) if common else previous) < level
    if older is not None and older.shape == previous.shape:
        quiet = quiet & ((older.mean(dim=0, keepdim=True) if common else older) < level)
    return quiet


def ignored_relevance(previous: Tensor, older: Tensor | None = None) -> Tensor:
    """Per sample and cell, the relevance where :func:`quiet_regions` (per sample) finds the place ignored (the larger
    of ``previous`` and ``older``), ``inf`` where it was not: the least relevant ignored places sort first."""
    level = previous if older is None or older.shape != previous.shape else torch.maximum(previous, older)
    return level.masked_fill(~quiet_regions(previous, False, older), float("inf"))


def novel_relevance(current: Tensor, previous: Tensor, common: bool = False, older: Tensor | None = None) -> Tensor:
    """Per sample, ``Σ (current − previous)`` over the :func:`quiet_regions`: relevance moved to ignored places."""
    return ((current - previous) * quiet_regions(previous, common, older)).flatten(1).sum(dim=1)


def peak_region(gain: Tensor, level: float = 0.5) -> tuple[int, int, int, int] | None:
    """The inclusive cell box of the blob of touching cells >= ``level`` × the peak around it; None if none gained."""
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


def smallest_box(gain: Tensor, share: float) -> tuple[int, int, int, int] | None:
    """The smallest box ``(top, left, bottom, right)`` (bottom/right exclusive) of the 2-D ``gain`` (negatives count
    as 0) holding at least ``share`` (in ``(0, 1]``) of its total; of equal areas the one holding most, then the first
    in row order (at one corner, the shorter). None if nothing gained. One vectorised search per box height (the
    gain is non-negative, so each band's running sums are sorted and the narrowest box from every left edge is one
    ``searchsorted``).

    Example::

        >>> gain = torch.zeros(5, 5); gain[1:4, 2:4] = 1.0; gain[0, 0] = 0.1  # a 3x2 blob and a speck
        >>> smallest_box(gain, 0.9), smallest_box(gain, 1.0)
        ((1, 2, 4, 4), (0, 0, 4, 4))
    """
    if gain.ndim != 2:
        raise ValueError(f"`gain` must have shape (H, W); got {tuple(gain.shape)}.")
    if not 0.0 < share <= 1.0:
        raise ValueError(f"`share` must be in (0, 1]; got {share!r}.")
    g = torch.nan_to_num(gain.detach().double().cpu(), nan=0.0, posinf=0.0).clamp_min(0)
    total = float(g.sum())
    if not total > 0:
        return None
    (rows, cols), needed = g.shape, share * total * (1 - 1e-9)
    above = F.pad(g.cumsum(0), (0, 0, 1, 0))  # above[i, j]: column j's gain above row i
    lefts = torch.arange(cols)
    best: tuple[int, float, int, int, int, int] | None = None  # (area, -held, top, left, height, width)
    for h in range(1, rows + 1):
        if best is not None and h > best[0]:  # every box this high is larger than the best
            break
        prefix = F.pad((above[h:] - above[:-h]).cumsum(1), (1, 0))  # per band of h rows: gain left of column j
        right = torch.searchsorted(prefix, prefix[:, :-1] + needed)  # the narrowest box from each left edge
        width = torch.where(right <= cols, right - lefts, cols + 1)
        narrowest = int(width.min())
        if narrowest > cols or (best is not None and h * narrowest > best[0]):
            continue
        ends = (lefts + narrowest).clamp(max=cols).expand_as(width)
        held = (prefix.gather(1, ends) - prefix[:, :-1]).masked_fill(width != narrowest, -math.inf)
        top, left = divmod(int(held.flatten().argmax()), cols)  # the most held, the first in row order
        key = (h * narrowest, -float(held[top, left]), top, left, h, narrowest)
        best = key if best is None or key[:4] < best[:4] else best
    if best is None:
        return None
    _, _, top, left, h, w = best
    return top, left, top + h, left + w


def colour_share(attributions: Tensor) -> Tensor:
    """Per sample, the share of the attribution's energy in the differences between channels (colour, for RGB):
    ``‖A − mean_c A‖² / ‖A‖²`` of ``(N, C, H, W)`` attributions, 0 for an all-zero attribution. A model that reads
    the brightness pattern alone gives every channel of a pixel about the same attribution (share near 0); one
    that reads which colour a pixel has gives them different ones.

    Example::

        >>> grey = torch.ones(1, 3, 2, 2)  # every channel alike
        >>> red = torch.zeros(1, 3, 2, 2); red[:, 0] = 1.0  # only the red channel
        >>> [round(v, 4) for v in colour_share(torch.cat([grey, red])).tolist()]
        [0.0, 0.6667]
    """
    if attributions.ndim != 4:
        raise ValueError(f"`attributions` must have shape (N, C, H, W); got {tuple(attributions.shape)}.")
    a = attributions.detach().to(compute_dtype(attributions.device))
    total = a.square().flatten(1).sum(dim=1)
    contrast = (a - a.mean(dim=1, keepdim=True)).square().flatten(1).sum(dim=1)
    return torch.where(total > 0, contrast / total.clamp_min(torch.finfo(a.dtype).tiny), 0.0)
