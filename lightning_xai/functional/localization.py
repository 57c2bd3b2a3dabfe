"""Ground-truth localisation of attribution maps: does the explanation point at the object?

* :func:`relevance_mass` — the *relevance mass accuracy* of Arras et al. (2022), "CLEVR-XAI: A benchmark
  dataset for the ground truth evaluation of neural network explanations": the share of the attribution
  magnitude that falls inside the ground-truth mask.
* :func:`pointing_game` — the *pointing game* of Zhang et al. (2018), "Top-down neural attention by
  excitation backprop": a hit when the most attributed cell lies inside the mask.

Attributions are ``(N, H, W)`` or ``(N, C, H, W)``; channels are merged by summing ``|A|`` over ``C``.
Masks are ``(N, H, W)`` or ``(N, 1, H, W)``, boolean or 0/1 numbers. The functions are batched, work on any
device and dtype, compute in float64 (float32 on MPS) and return float32 on the attributions' device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_xai.functional._common import compute_dtype as _compute_dtype

__all__ = ["pointing_game", "relevance_mass"]


def _prepare(attributions: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Validate and return ``(|A| summed over channels, mask)`` flattened to (N, H·W) rows."""
    if not isinstance(attributions, Tensor):
        raise TypeError(f"`attributions` must be a torch.Tensor, got {type(attributions).__name__}.")
    if not isinstance(masks, Tensor):
        raise TypeError(f"`masks` must be a torch.Tensor, got {type(masks).__name__}.")
    if attributions.ndim not in (3, 4):
        raise ValueError(
            f"`attributions` must have shape (N, H, W) or (N, C, H, W); got shape {tuple(attributions.shape)}."
        )
    if attributions.is_complex():
        raise ValueError(f"`attributions` must be a real tensor, got dtype {attributions.dtype}.")
    if not (masks.ndim == 3 or (masks.ndim == 4 and masks.shape[1] == 1)):
        raise ValueError(f"`masks` must have shape (N, H, W) or (N, 1, H, W); got shape {tuple(masks.shape)}.")
    if attributions.shape[0] != masks.shape[0]:
        raise ValueError(
            f"`attributions` and `masks` must have the same batch size; got `attributions` "
            f"{tuple(attributions.shape)} ({attributions.shape[0]} samples) and `masks` "
            f"{tuple(masks.shape)} ({masks.shape[0]} samples)."
        )
    if attributions.shape[-2:] != masks.shape[-2:]:
        raise ValueError(
            f"`attributions` and `masks` must have the same spatial shape (H, W); got `attributions` "
            f"{tuple(attributions.shape)} and `masks` {tuple(masks.shape)}."
        )
    if attributions.device != masks.device:
        raise ValueError(
            f"`attributions` and `masks` must be on the same device; got `attributions` on "
            f"{attributions.device} and `masks` on {masks.device}."
        )
    n = attributions.shape[0]
    cells = math.prod(attributions.shape[-2:])
    if cells == 0:
        raise ValueError(f"`attributions` must have at least one cell; got shape {tuple(attributions.shape)}.")

    magnitude = attributions.detach().to(_compute_dtype(attributions.device)).abs()
    if magnitude.ndim == 4:
        magnitude = magnitude.sum(dim=1)
    mask = masks.detach().reshape(n, cells)
    if mask.dtype != torch.bool:
        if mask.is_complex() or bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError(
                f"`masks` must be boolean or contain only 0 and 1; got dtype {masks.dtype} with other values."
            )
        mask = mask != 0
    return magnitude.reshape(n, cells), mask


def relevance_mass(attributions: Tensor, masks: Tensor) -> Tensor:
    """Share of the attribution magnitude inside the mask: ``sum(|A|·mask) / sum(|A|)``, per sample.

    Relevance mass accuracy (Arras et al., 2022). Channels are merged by summing ``|A|`` over ``C``.
    A sample whose attributions are all zero gets 0.0 (no relevance, hence none inside the mask).

    Args:
        attributions: ``(N, H, W)`` or ``(N, C, H, W)``.
        masks: ``(N, H, W)`` or ``(N, 1, H, W)``, boolean or 0/1.

    Returns:
        float32 tensor of shape ``(N,)`` in ``[0, 1]`` on the attributions' device.

    Raises:
        ValueError: if the shapes are not as above, the batch or spatial sizes differ, or a numeric mask
            holds values other than 0 and 1.

    Example::

        >>> attributions = torch.tensor([[[3.0, -1.0], [0.0, 0.0]]])
        >>> masks = torch.tensor([[[True, False], [False, False]]])
        >>> relevance_mass(attributions, masks)
        tensor([0.7500])
    """
    magnitude, mask = _prepare(attributions, masks)
    total = magnitude.sum(dim=1)
    inside = (magnitude * mask).sum(dim=1)
    share = (inside / torch.where(total > 0, total, torch.ones_like(total))).clamp(0.0, 1.0)
    share = torch.where(total > 0, share, torch.zeros_like(share))
    share = torch.where(total.isnan(), total, share)
    return share.to(torch.float32)


def pointing_game(attributions: Tensor, masks: Tensor) -> Tensor:
    """1.0 when the most attributed cell lies inside the mask, else 0.0, per sample.

    Pointing game (Zhang et al., 2018). Channels are merged by summing ``|A|`` over ``C`` before looking for
    the maximum. Ties at the maximum count as a hit if *any* maximal cell is inside the mask. A sample whose
    attributions are all zero gets 0.0 (no evidence); one containing NaN gets NaN.

    Args:
        attributions: ``(N, H, W)`` or ``(N, C, H, W)``.
        masks: ``(N, H, W)`` or ``(N, 1, H, W)``, boolean or 0/1.

    Returns:
        float32 tensor of shape ``(N,)`` holding 0.0 or 1.0, on the attributions' device.

    Raises:
        ValueError: if the shapes are not as above, the batch or spatial sizes differ, or a numeric mask
            holds values other than 0 and 1.

    Example::

        >>> attributions = torch.tensor([[[0.0, -5.0], [1.0, 0.0]], [[0.0, -5.0], [1.0, 0.0]]])
        >>> masks = torch.tensor([[[False, True], [False, False]], [[True, False], [True, True]]])
        >>> pointing_game(attributions, masks)
        tensor([1., 0.])
    """
    magnitude, mask = _prepare(attributions, masks)
    peak = magnitude.amax(dim=1, keepdim=True)
    hit = ((magnitude == peak) & mask).any(dim=1) & (peak.squeeze(1) > 0)
    result = hit.to(magnitude.dtype)
    result = torch.where(magnitude.isnan().any(dim=1), torch.full_like(result, math.nan), result)
    return result.to(torch.float32)
