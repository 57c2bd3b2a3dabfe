"""Helpers the functional metrics share."""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(device: torch.device) -> torch.dtype:
    """float64 wherever the backend supports it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


def check_tensor(name: str, value: object) -> Tensor:
    """``value`` if it is a real tensor, else a ``TypeError``/``ValueError`` naming ``name``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}.")
    if value.is_complex():
        raise ValueError(f"`{name}` must be a real tensor, got dtype {value.dtype}.")
    return value


def magnitudes(name: str, maps: Tensor) -> Tensor:
    """``|maps|`` ``(N, ...)`` as ``(N, D)`` rows in :func:`compute_dtype`, or a ``ValueError`` naming ``name``."""
    check_tensor(name, maps)
    if maps.ndim < 2 or maps[0].numel() == 0:
        shape = tuple(maps.shape)
        raise ValueError(
            f"`{name}` must have shape (N, ...) with ndim >= 2 and at least one cell per sample, got {shape}."
        )
    return maps.detach().reshape(len(maps), -1).to(compute_dtype(maps.device)).abs()
