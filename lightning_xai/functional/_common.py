"""Helpers the functional metrics share."""

from __future__ import annotations

import torch


def compute_dtype(device: torch.device) -> torch.dtype:
    """float64 wherever the backend supports it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64
