"""Does the explanation point at the object? Attributions ``(N, H, W)`` or ``(N, C, H, W)`` (``|A|`` summed over C),
masks ``(N, H, W)`` or ``(N, 1, H, W)``, boolean or 0/1; batched, in float64 (float32 on MPS), float32 ``(N,)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_xai.functional._common import check_tensor, compute_dtype


def _prepare(attributions: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Validate and return ``(|A| summed over channels, mask)`` flattened to (N, H·W) rows."""
    check_tensor("attributions", attributions)
    check_tensor("masks", masks)
    a_shape, m_shape = tuple(attributions.shape), tuple(masks.shape)
    if attributions.ndim not in (3, 4):
        raise ValueError(f"`attributions` must have shape (N, H, W) or (N, C, H, W); got shape {a_shape}.")
    if not (masks.ndim == 3 or (masks.ndim == 4 and masks.shape[1] == 1)):
        raise ValueError(f"`masks` must have shape (N, H, W) or (N, 1, H, W); got shape {m_shape}.")
    what = "batch size" if a_shape[0] != m_shape[0] else "spatial shape (H, W)" if a_shape[-2:] != m_shape[-2:] else ""
    if what:
        raise ValueError(f"`attributions` and `masks` must have the same {what}; got {a_shape} and {m_shape}.")
    if attributions.device != masks.device:
        raise ValueError(
            f"`attributions` and `masks` must be on the same device; got {attributions.device} and {masks.device}."
        )
    n, cells = a_shape[0], math.prod(a_shape[-2:])
    if cells == 0:
        raise ValueError(f"`attributions` must have at least one cell; got shape {a_shape}.")
    magnitude = attributions.detach().to(compute_dtype(attributions.device)).abs().reshape(n, -1, cells).sum(dim=1)
    mask = masks.detach().reshape(n, cells)
    if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"`masks` must be boolean or contain only 0 and 1; got dtype {masks.dtype} with others.")
    return magnitude, mask != 0


def relevance_mass(attributions: Tensor, masks: Tensor) -> Tensor:
    """Share of the attribution magnitude inside the mask, ``sum(|A|·mask) / sum(|A|)``, per sample: the relevance
    mass accuracy of Arras et al. (2022), "CLEVR-XAI". An all-zero map gets 0.0; NaN propagates.

    Args:
        attributions: ``(N, H, W)`` or ``(N, C, H, W)`` maps (channels merged by summing ``|A|``).
        masks: ``(N, H, W)`` or ``(N, 1, H, W)``, boolean or 0/1; other shapes or values raise a ``ValueError``.

    Returns a float32 ``(N,)`` tensor on the attributions' device.

    Example::

        >>> relevance_mass(torch.tensor([[[3.0, -1.0], [0.0, 0.0]]]), torch.tensor([[[True, False], [False, False]]]))
        tensor([0.7500])
    """
    magnitude, mask = _prepare(attributions, masks)
    total = magnitude.sum(dim=1)
    share = ((magnitude * mask).sum(dim=1) / torch.where(total > 0, total, 1.0)).clamp(0.0, 1.0)
    share = torch.where(total > 0, share, 0.0)
    return torch.where(total.isnan(), total, share).to(torch.float32)


def pointing_game(attributions: Tensor, masks: Tensor) -> Tensor:
    """1.0 when the most attributed cell lies inside the mask, else 0.0, per sample: the pointing game of Zhang et al.
    (2018), "Top-down neural attention by excitation backprop". A tie at the maximum hits if any tied cell is inside;
    an all-zero map gets 0.0; NaN propagates.

    Args:
        attributions: ``(N, H, W)`` or ``(N, C, H, W)`` maps (channels merged by summing ``|A|``).
        masks: ``(N, H, W)`` or ``(N, 1, H, W)``, boolean or 0/1; other shapes or values raise a ``ValueError``.

    Returns a float32 ``(N,)`` tensor on the attributions' device.

    Example::

        >>> attributions = torch.tensor([[[0.0, -5.0], [1.0, 0.0]], [[0.0, -5.0], [1.0, 0.0]]])
        >>> masks = torch.tensor([[[False, True], [False, False]], [[True, False], [True, True]]])
        >>> pointing_game(attributions, masks)
        tensor([1., 0.])
    """
    magnitude, mask = _prepare(attributions, masks)
    peak = magnitude.amax(dim=1, keepdim=True)
    hit = (((magnitude == peak) & mask).any(dim=1) & (peak.squeeze(1) > 0)).to(magnitude.dtype)
    return torch.where(magnitude.isnan().any(dim=1), math.nan, hit).to(torch.float32)
