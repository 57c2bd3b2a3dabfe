"""Random number generators left as they were: what the monitor draws never moves the training run's streams."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def isolated_rng(device: torch.device | None = None) -> Iterator[None]:
    """Fork the torch (CPU and the given CUDA device), numpy and Python RNGs and restore them on exit."""
    cuda = device is not None and device.type == "cuda" and torch.cuda.is_initialized()
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[device] if cuda else []):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
