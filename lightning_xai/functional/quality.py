"""How concentrated an attribution map is, and the area under a perturbation curve: pure, batched functions.

Like the drift metrics they look at the magnitude ``|A|`` of each sample's map ``(N, ...)`` flattened to ``D``
cells, compute in float64 (float32 on MPS) and return float32 ``(N,)`` on the input's device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_xai.functional._common import compute_dtype

__all__ = ["curve_auc", "entropy", "sparseness"]


def _magnitudes(maps: Tensor) -> Tensor:
    if not isinstance(maps, Tensor):
        raise TypeError(f"`maps` must be a torch.Tensor, got {type(maps).__name__}.")
    if maps.ndim < 2 or maps[0].numel() == 0:
        raise ValueError(f"`maps` must have shape (N, ...) with at least one cell per sample, got {tuple(maps.shape)}.")
    return maps.detach().reshape(len(maps), -1).to(compute_dtype(maps.device)).abs()


def sparseness(maps: Tensor) -> Tensor:
    """The Gini index of ``|A|`` per sample (Chalasani et al., 2020, https://arxiv.org/abs/1810.06583):
    ``sum_i (2i - D - 1) a_(i) / (D · sum_i a_i)`` over the magnitudes sorted ascending, i.e. the mean absolute
    difference of all pairs of cells over twice their mean.

    0 when every cell carries the same relevance (and for an all-zero map), ``1 - 1/D`` when a single cell carries
    all of it: higher is sparser, a map that points somewhere.

    Example::

        >>> sparseness(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]]))
        tensor([0.0000, 0.7500, 0.0000])
    """
    a = _magnitudes(maps)
    d = a.shape[1]
    sorted_a = a.sort(dim=1).values
    weights = 2 * torch.arange(1, d + 1, device=a.device, dtype=a.dtype) - d - 1
    total = a.sum(dim=1)
    gini = (sorted_a * weights).sum(dim=1) / (d * total.clamp_min(torch.finfo(a.dtype).tiny))
    gini = torch.where(total > 0, gini, torch.zeros_like(gini))
    return gini.to(device=maps.device, dtype=torch.float32)


def entropy(maps: Tensor) -> Tensor:
    """The Shannon entropy of ``p = |A| / sum |A|`` per sample, divided by ``log D`` so it lies in ``[0, 1]``:
    1 when relevance is spread evenly over the cells (also for an all-zero map, which points nowhere), 0 when
    one cell carries all of it (and for a single-cell map). Lower is more concentrated.

    Example::

        >>> entropy(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0], [0.0, 2.0, 0.0, 2.0]]))
        tensor([1.0000, 0.0000, 0.5000])
    """
    a = _magnitudes(maps)
    d = a.shape[1]
    total = a.sum(dim=1, keepdim=True)
    p = a / total.clamp_min(torch.finfo(a.dtype).tiny)
    h = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(dim=1)
    h = h / math.log(d) if d > 1 else torch.zeros_like(h)
    h = torch.where(total[:, 0] > 0, h, torch.ones_like(h) if d > 1 else h)
    return (h.clamp(0.0, 1.0) + 0.0).to(device=maps.device, dtype=torch.float32)  # + 0.0: no -0.0


def curve_auc(scores: Tensor) -> Tensor:
    """Area under a curve sampled at ``S + 1`` evenly spaced points of ``[0, 1]`` (the trapezoid rule), per row:
    the deletion or insertion AUC of the scores after removing/inserting ``0, 1/S, ..., 1`` of the pixels.

    Example::

        >>> curve_auc(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
        tensor([1.0000, 0.2500])
    """
    if not isinstance(scores, Tensor) or scores.ndim != 2 or scores.shape[1] < 2:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"`scores` must be (N, S + 1) with S >= 1, got {shape}.")
    s = scores.detach().to(compute_dtype(scores.device))
    area = (s[:, 1:] + s[:, :-1]).sum(dim=1) / (2 * (s.shape[1] - 1))
    return area.to(device=scores.device, dtype=torch.float32)
