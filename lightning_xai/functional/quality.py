"""How concentrated an attribution map is, and the area under a perturbation curve. Batched on ``|A|`` of each sample
``(N, ...)`` flattened to ``D`` cells, in float64 (float32 on MPS); float32 ``(N,)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_xai.functional._common import compute_dtype, magnitudes


def sparseness(maps: Tensor) -> Tensor:
    """The Gini index of ``|A|`` per sample (Chalasani et al., 2020, https://arxiv.org/abs/1810.06583): 0 when every
    cell carries the same relevance (and for an all-zero map), ``1 - 1/D`` when one cell carries all; higher is sparser.

    Example::

        >>> sparseness(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]]))
        tensor([0.0000, 0.7500, 0.0000])
    """
    a = magnitudes("maps", maps)
    d = a.shape[1]
    weights = 2 * torch.arange(1, d + 1, device=a.device, dtype=a.dtype) - d - 1
    total = a.sum(dim=1)
    gini = (a.sort(dim=1).values * weights).sum(dim=1) / (d * total.clamp_min(torch.finfo(a.dtype).tiny))
    return torch.where(total > 0, gini, 0.0).to(device=maps.device, dtype=torch.float32)


def entropy(maps: Tensor) -> Tensor:
    """The Shannon entropy of ``|A| / sum |A|`` per sample over ``log D``, in ``[0, 1]``: 1 when relevance is spread
    evenly (and for an all-zero map), 0 when one cell carries all of it; lower is more concentrated.

    Example::

        >>> entropy(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0], [0.0, 2.0, 0.0, 2.0]]))
        tensor([1.0000, 0.0000, 0.5000])
    """
    a = magnitudes("maps", maps)
    d = a.shape[1]
    total = a.sum(dim=1, keepdim=True)
    p = a / total.clamp_min(torch.finfo(a.dtype).tiny)
    h = -(p * torch.where(p > 0, p.log(), 0.0)).sum(dim=1)
    h = h / math.log(d) if d > 1 else torch.zeros_like(h)
    h = torch.where(total[:, 0] > 0, h, 1.0 if d > 1 else h)
    return (h.clamp(0.0, 1.0) + 0.0).to(device=maps.device, dtype=torch.float32)  # + 0.0: no -0.0


def curve_auc(scores: Tensor) -> Tensor:
    """Area under a curve sampled at ``S + 1`` evenly spaced points of ``[0, 1]`` (trapezoid rule), per row: the
    deletion or insertion AUC.

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
