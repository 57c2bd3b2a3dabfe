"""Random number generators left as they were: what the monitor draws never moves the training run's streams."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


@contextmanager
def isolated_rng(device: torch.device | None = None) -> Iterator[None]:
    """Fork the torch (CPU and the given CUDA device), numpy and Python RNGs and restore them on exit."""
    cuda = _cuda(device)
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[device] if cuda else []):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


#: the seed of the streams a model's own randomness draws from while it is explained (inside :func:`isolated_rng`)
EXPLAIN_SEED = 0


def seed_streams(device: torch.device | None = None, seed: int = EXPLAIN_SEED, torch_only: bool = False) -> None:
    """Seed the torch (CPU and the given CUDA device), numpy and Python RNGs (``torch_only``: torch's alone); only
    inside :func:`isolated_rng` (or a fork of the streams seeded), which puts them back."""
    torch.default_generator.manual_seed(seed)
    if _cuda(device):  # the stream isolated_rng forks
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    if not torch_only:
        np.random.seed(seed)
        random.seed(seed)


def _cuda(device: torch.device | None) -> bool:
    return device is not None and device.type == "cuda" and torch.cuda.is_initialized()


def seeded_calls(fn: Callable[..., T], device: torch.device | None = None) -> Callable[..., T]:
    """``fn`` run on torch's streams forked and seeded (:func:`seed_streams`) at every call. A forward that draws
    random numbers in eval mode (MC dropout, noise injection: torch's streams) then draws the same ones for the same
    batch whenever it runs, so the same weights give the same maps at every evaluation (and whatever the methods or
    IG's step search ran before), instead of a drift that is noise alone. Torch's alone: forking numpy's stream costs
    60 µs a call, and a forward drawing from numpy or Python's ``random`` is rare (the whole explanation is inside
    :func:`isolated_rng` all the same, so training's streams never move)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> T:
        # the caller's streams go on as they were afterwards (a sampling method draws between calls)
        with torch.random.fork_rng(devices=[device] if _cuda(device) else []):
            seed_streams(device, torch_only=True)
            return fn(*args, **kwargs)

    return call
