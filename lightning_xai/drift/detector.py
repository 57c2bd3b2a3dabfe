"""The default drift detector: it calibrates itself on the run it watches.

A fixed threshold on "distance from an early reference" cannot tell learning from a shortcut: ordinary training
moves explanations a lot early on and less later, by amounts that differ between models, inputs and methods.
:class:`ShiftDetector` instead watches the *rate* of change (how much relevance moved since the previous
evaluation, :func:`~lightning_xai.functional.relevance_shift`) and learns its normal level from the run itself.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_xai.functional.shift import gain_box, relevance_distribution, relevance_gain, relevance_shift


@dataclass(frozen=True)
class Detection:
    """What the detector saw at one evaluation of one method.

    Attributes:
        score: the watched value (median share of relevance that moved since the previous evaluation).
        threshold: the calibrated threshold (None while calibrating).
        noise: the normal level it was calibrated on (the median score of earlier evaluations; None before).
        fired: True when this evaluation raises an alert.
        probe_indices: probes whose own shift is over the threshold.
        region: ``(top, left, bottom, right)`` in input pixels of the region that gained relevance (None if none).
        region_share: share of probes whose largest gain lies in that region.
    """

    score: float
    threshold: float | None
    noise: float | None
    fired: bool = False
    probe_indices: tuple[int, ...] = ()
    region: tuple[int, int, int, int] | None = None
    region_share: float = 0.0


@dataclass
class _MethodState:
    previous: Tensor | None = None
    scores: list[float] = field(default_factory=list)
    cooldown_left: int = 0


class ShiftDetector:
    """Alert when explanations move much more than they normally do in this run.

    Each evaluation, every probe's attribution map becomes a distribution of relevance over at most
    ``cells`` × ``cells`` regions, and the detector measures the share of relevance that moved since the
    previous evaluation (total variation, 0–1). Its *score* is the median over probes. Scores of the
    evaluations after the warm-up calibrate the run's normal level: the median of the earlier scores
    (``noise``) and their spread. An evaluation alerts when

        ``score >= max(floor, ratio × noise, noise + k × spread)``

    once at least ``calibration`` scores are known. An alert's score is not added to the calibration, and the
    detector stays silent for ``cooldown`` evaluations after it.

    Args:
        calibration: scores needed before the detector may alert.
        ratio: how many times the normal level a change must be.
        k: how many spreads (1.4826 × median absolute deviation) above the normal level.
        floor: the smallest share of relevance that must move, whatever the calibration says.
        cells: regions per side of the grid the maps are pooled onto.
        cooldown: evaluations after an alert during which the method stays silent.

    Example::

        >>> det = ShiftDetector(calibration=2)
        >>> maps = torch.zeros(4, 8, 8); maps[:, 3:5, 3:5] = 1.0  # relevance on the object
        >>> for epoch in range(4):
        ...     d = det.update("gradcam", maps + 0.05 * epoch, (32, 32), armed=True)
        >>> shortcut = torch.zeros(4, 8, 8); shortcut[:, 0, 7] = 1.0  # now on a corner
        >>> d = det.update("gradcam", shortcut, (32, 32), armed=True)
        >>> d.fired, d.region
        (True, (0, 28, 3, 31))
    """

    def __init__(
        self,
        calibration: int = 2,
        ratio: float = 3.0,
        k: float = 4.0,
        floor: float = 0.1,
        cells: int = 8,
        cooldown: int = 3,
    ) -> None:
        for name, value, low in (("calibration", calibration, 1), ("cells", cells, 1), ("cooldown", cooldown, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`ShiftDetector({name}=...)` must be an int >= {low}, got {value!r}.")
        for name, number in (("ratio", ratio), ("k", k), ("floor", floor)):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
                raise ValueError(f"`ShiftDetector({name}=...)` must be a finite number, got {number!r}.")
            if number < 0:
                raise ValueError(f"`ShiftDetector({name}=...)` must be >= 0, got {number!r}.")
        self.calibration, self.ratio, self.k, self.floor = calibration, float(ratio), float(k), float(floor)
        self.cells, self.cooldown = cells, cooldown
        self._states: dict[str, _MethodState] = {}

    def config(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration,
            "ratio": self.ratio,
            "k": self.k,
            "floor": self.floor,
            "cells": self.cells,
            "cooldown": self.cooldown,
        }

    def threshold(self, scores: list[float]) -> tuple[float | None, float | None]:
        """``(threshold, noise)`` from the calibration scores; ``(None, None)`` while there are too few.

        Example::

            >>> ShiftDetector().threshold([0.10, 0.12])
            (0.33, 0.11)
        """
        if len(scores) < self.calibration:
            return None, None
        noise = statistics.median(scores)
        spread = 1.4826 * statistics.median(abs(s - noise) for s in scores)
        return round(max(self.floor, self.ratio * noise, noise + self.k * spread), 6), round(noise, 6)

    def update(self, method: str, maps: Tensor, input_size: tuple[int, int], armed: bool) -> Detection | None:
        """Feed one evaluation's raw maps ``(P, h, w)`` of ``method``; None when there is no previous map yet.

        ``armed`` is False during the warm-up: the score is measured but neither calibrates nor alerts."""
        state = self._states.setdefault(method, _MethodState())
        current = relevance_distribution(maps.detach().float().cpu(), self.cells)
        previous, state.previous = state.previous, current
        if previous is None or previous.shape != current.shape:
            return None
        per_probe = relevance_shift(current, previous)
        score = float(per_probe.median())
        threshold, noise = self.threshold(state.scores)
        if not armed:
            return Detection(score, None, None)
        if state.cooldown_left > 0:  # right after an alert: neither calibrate on it nor alert again
            state.cooldown_left -= 1
            return Detection(score, threshold, noise)
        fired = threshold is not None and score >= threshold
        if not fired:
            state.scores.append(score)
            return Detection(score, threshold, noise)
        assert threshold is not None
        state.cooldown_left = self.cooldown
        gain = relevance_gain(current, previous)
        box = gain_box(gain)
        region, share = None, 0.0
        if box is not None:
            top, left, bottom, right = box
            sy, sx = input_size[0] / current.shape[1], input_size[1] / current.shape[2]
            region = (
                int(top * sy),
                int(left * sx),
                int(math.ceil((bottom + 1) * sy)) - 1,
                int(math.ceil((right + 1) * sx)) - 1,
            )
            peak = gain.flatten(1).argmax(dim=1)
            rows, cols = peak // current.shape[2], peak % current.shape[2]
            inside = (rows >= top) & (rows <= bottom) & (cols >= left) & (cols <= right)
            share = float(inside.double().mean())
        over = tuple(int(i) for i in torch.nonzero(per_probe >= threshold).flatten())
        return Detection(score, threshold, noise, True, over, region, share)

    def state_dict(self) -> dict[str, Any]:
        return {
            name: {"previous": s.previous, "scores": list(s.scores), "cooldown_left": s.cooldown_left}
            for name, s in self._states.items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._states = {
            name: _MethodState(s.get("previous"), [float(v) for v in s.get("scores", [])], int(s["cooldown_left"]))
            for name, s in state.items()
        }
