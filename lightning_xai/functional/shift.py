"""Where relevance moved between two attribution maps: how much of it, and into which region.

An attribution map is read as a distribution of relevance over the image: ``|A|`` pooled onto a coarse grid
of regions (at most ``cells`` × ``cells``, so pixel noise averages out) and normalised to sum to 1 per sample.
Between two such distributions ``p`` (before) and ``q`` (after):

* :func:`relevance_shift` — the share of relevance that moved, the total-variation distance
  ``½ Σ |q − p|`` in ``[0, 1]``;
* :func:`relevance_gain` — where it went, ``max(q − p, 0)`` per region;
* :func:`novel_relevance` — the share of relevance that moved into regions that held little before: ``Σ (q − p)``
  over the regions where ``p`` was below the uniform level (``1 / regions``). Sharpening onto what a map already
  showed lowers it; relevance leaving for a region the map ignored (a watermark, a background cue) raises it.
  With ``common=True`` the quiet regions are those of the probes' *average* map, so that only relevance moving
  into regions that all probes ignored counts (a cue shared by the data), and random per-probe jitter averages
  out;
* :func:`gain_box` — the bounding box of the regions that gained most, across samples;
* :func:`peak_region` — the bounding box of the connected blob around the largest gain of one map (one place,
  not a box around every place that gained).

All functions are batched, work on any device and compute in float64 (float32 on MPS).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_xai.functional._common import compute_dtype

__all__ = [
    "gain_box",
    "novel_relevance",
    "peak_region",
    "quiet_regions",
    "relevance_distribution",
    "relevance_gain",
    "relevance_shift",
]


def relevance_distribution(maps: Tensor, cells: int = 8) -> Tensor:
    """``|maps|`` ``(N, H, W)`` averaged onto at most ``cells`` × ``cells`` regions and normalised to sum 1 per
    sample; an all-zero map becomes uniform (no region preferred).

    Example::

        >>> relevance_distribution(torch.tensor([[[0.0, 2.0], [0.0, 2.0]]]), cells=2)
        tensor([[[0.0000, 0.5000],
                 [0.0000, 0.5000]]], dtype=torch.float64)
    """
    if maps.ndim != 3:
        raise ValueError(f"`maps` must have shape (N, H, W); got {tuple(maps.shape)}.")
    if cells < 1:
        raise ValueError(f"`cells` must be >= 1, got {cells}.")
    m = maps.detach().to(compute_dtype(maps.device)).abs()
    m = torch.nan_to_num(m, nan=0.0, posinf=0.0)
    h, w = m.shape[-2:]
    if h > cells or w > cells:
        m = F.adaptive_avg_pool2d(m.unsqueeze(1), (min(h, cells), min(w, cells))).squeeze(1)
    total = m.sum(dim=(1, 2), keepdim=True)
    uniform = torch.full_like(m, 1.0 / (m.shape[1] * m.shape[2]))
    return torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), uniform)


def relevance_shift(current: Tensor, previous: Tensor) -> Tensor:
    """Share of relevance that moved between two distributions (total variation), per sample, in ``[0, 1]``.

    Example::

        >>> p = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])
        >>> relevance_shift(p, p).item(), relevance_shift(p.flip(1), p).item()
        (0.0, 1.0)
    """
    return 0.5 * (current - previous).abs().flatten(1).sum(dim=1)


def relevance_gain(current: Tensor, previous: Tensor) -> Tensor:
    """Relevance each region gained, ``max(current − previous, 0)``, shape ``(N, h, w)``."""
    return (current - previous).clamp_min(0)


def quiet_regions(previous: Tensor, common: bool = False, older: Tensor | None = None) -> Tensor:
    """Where relevance was below the uniform level in ``previous`` (per sample, or with ``common=True`` in the
    samples' average map) and, with ``older`` (an earlier set of maps of the same shape), there too.

    Example::

        >>> quiet_regions(torch.tensor([[[0.7, 0.1], [0.1, 0.1]]])).tolist()
        [[[False, True], [True, True]]]
    """
    regions = previous.shape[-1] * previous.shape[-2]
    quiet = (previous.mean(dim=0, keepdim=True) if common else previous) < 1.0 / regions
    if older is not None and older.shape == previous.shape:
        quiet = quiet & ((older.mean(dim=0, keepdim=True) if common else older) < 1.0 / regions)
    return quiet


def novel_relevance(current: Tensor, previous: Tensor, common: bool = False, older: Tensor | None = None) -> Tensor:
    """Per sample, the share of relevance that moved into quiet regions: ``Σ (current − previous)`` over the regions
    where ``previous`` was below the uniform level (with ``common=True``: where the samples' *average* previous
    map was; with ``older``, an earlier set of maps, the region must have been quiet there too, so relevance
    returning to where it was before a one-off blip is not new). Positive when relevance moved into regions that
    used to be ignored.

    Example::

        >>> before = torch.tensor([[[0.7, 0.1], [0.1, 0.1]]])
        >>> after = torch.tensor([[[0.4, 0.1], [0.1, 0.4]]])  # a quiet corner lights up
        >>> round(novel_relevance(after, before).item(), 3), round(novel_relevance(before, before).item(), 3)
        (0.3, 0.0)
    """
    return ((current - previous) * quiet_regions(previous, common, older)).flatten(1).sum(dim=1)


def gain_box(gain: Tensor, level: float = 0.5) -> tuple[int, int, int, int] | None:
    """``(top, left, bottom, right)`` (inclusive, in regions) around the regions whose mean gain over samples is at
    least ``level`` × its maximum; None when nothing gained.

    Example::

        >>> g = torch.zeros(2, 4, 4); g[:, 0, 3] = 0.3; g[:, 1, 3] = 0.2
        >>> gain_box(g)
        (0, 3, 1, 3)
    """
    mean = gain.double().mean(dim=0)
    peak = float(mean.max())
    if not peak > 0:
        return None
    rows, cols = torch.nonzero(mean >= level * peak, as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())


def peak_region(gain: Tensor, level: float = 0.5) -> tuple[int, int, int, int] | None:
    """``(top, left, bottom, right)`` (inclusive, in cells) around the connected blob of cells whose gain is at least
    ``level`` × the peak and that holds the peak (cells touching by an edge or a corner are connected); None when
    nothing gained. Unlike :func:`gain_box`, two places that both gained (a cue in two corners) give the box of the
    stronger one only.

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
    while True:  # grow from the peak through the cells over the level
        grown = F.max_pool2d(blob, 3, stride=1, padding=1) * over
        if torch.equal(grown, blob):
            break
        blob = grown
    rows, cols = torch.nonzero(blob[0, 0] > 0, as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())
