"""The detector's per-method state (saved as primitives in checkpoints; raw maps stay in memory) and the small
arithmetic its tests share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class _Candidate:
    origin: Tensor  # the distributions before the candidate's evaluation
    older: Tensor | None  # and the ones before those
    threshold: float
    noise: float
    origin_epoch: int = -1
    origin_raw: Tensor | None = field(default=None, metadata={"saved": False})  # for the evidence
    probe_level: float | None = None  # a subset candidate: the level each of its probes passed


@dataclass
class _Anchor:
    """Where an accumulating movement began: the distributions before its first step over the allowance."""

    origin: Tensor
    older: Tensor | None
    origin_epoch: int = -1
    origin_raw: Tensor | None = field(default=None, metadata={"saved": False})
    steps: int = 0  # evaluations since


@dataclass
class _MethodState:
    previous: Tensor | None = None
    scores: list[float] = field(default_factory=list)
    cooldown_left: int = 0
    candidate: _Candidate | None = None
    older: Tensor | None = None
    oldest: Tensor | None = None
    scores2: list[float] = field(default_factory=list)  # the run's calibrated movements over two evaluations
    armed_before: bool = False
    previous_epoch: int = -1
    previous_raw: Tensor | None = field(default=None, metadata={"saved": False})  # the evidence's "before"
    probe_squares: list[float] = field(default_factory=lambda: [0.0, 0.0])  # calibrated per-probe movements: Σ x², n
    probe_squares2: list[float] = field(default_factory=lambda: [0.0, 0.0])  # the same over two evaluations
    anchor: _Anchor | None = None
    previous_blank: Tensor | None = None  # ``(P,)``: which of the previous maps had no relevance (saved: a resume)

    def __post_init__(self) -> None:
        if self.previous_blank is None and self.previous is not None:  # a checkpoint from before it was saved
            self.previous_blank = _uniform_rows(self.previous)


def _uniform_rows(distributions: Tensor) -> Tensor | None:
    """``(P,)``: which of the pooled maps ``(P, h, w)`` are exactly uniform, as :func:`relevance_distribution` gives
    a map with no relevance (a map with relevance almost never is); None for another shape."""
    if distributions.ndim != 3 or not distributions.numel():
        return None
    uniform = 1.0 / (distributions.shape[1] * distributions.shape[2])
    return (distributions == uniform).flatten(1).all(dim=1)


def _add_squares(squares: list[float], moved: Tensor) -> None:
    squares[0] += float(moved.clamp_min(0).double().square().sum())
    squares[1] += float(moved.numel())


def _still(moved: Tensor, *blank: Tensor | None) -> Tensor:
    """``moved`` ``(P,)`` with 0 for the probes marked in any ``blank`` ``(P,)``: a map with no relevance says nowhere,
    so such a probe did not move (read as uniform, it would spread into every quiet region)."""
    for marked in blank:
        if marked is not None and marked.shape == moved.shape:
            moved = torch.where(marked, 0.0, moved)
    return moved


def _standard_error(moved: Tensor) -> float:
    return float(moved.std()) / math.sqrt(moved.numel()) if moved.numel() > 1 else math.inf
