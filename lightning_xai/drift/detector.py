"""The default drift detector: it looks for relevance moving somewhere new, together, and calibrates on the run.

A fixed threshold on "distance from an early reference" cannot tell learning from a shortcut: ordinary training
moves explanations a lot early on and less later, by amounts that differ between models, inputs and methods.
What a shortcut does differently is the *direction* of the change: relevance leaves the regions the model
used to read and moves, in many probes at once, into regions all of them ignored before (a watermark, a
corner patch, a background texture). Benign training sharpens maps where they already were, and its jitter
points in a different direction for every probe. :class:`ShiftDetector` measures exactly that movement and
judges it against two noise levels measured on the run itself.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_xai.drift.evidence import AlertEvidence, AlertRegion, gain_regions, input_maps
from lightning_xai.functional.shift import novel_relevance, quiet_regions, relevance_distribution


@dataclass(frozen=True)
class Detection:
    """What the detector saw at one evaluation of one method.

    Attributes:
        score: the watched value: the share of the probes' relevance that moved, since the previous evaluation,
            into regions the probes' average map had left quiet (mean over probes; negative when it left them).
            When ``fired``: the movement over the two evaluations of the alert (since the one before the candidate).
        threshold: the threshold of this evaluation (None while calibrating); when ``fired``, the confirmation's
            (calibrated on the run's movements over two evaluations, at least the candidate's threshold).
        noise: the noise level it was calibrated on: the larger of the spread of this evaluation's per-probe
            movements (standard error) and the run's own noise σ (root mean square of its earlier positive scores).
        fired: True when this evaluation raises an alert (it confirms the previous evaluation's candidate).
        candidate: True when the score crossed the threshold: the next evaluation confirms or drops it.
        confirmation: at the evaluation after a candidate, ``(movement since before the candidate, needed)``: the
            test that decides the alert (None otherwise).
        probe_indices: probes whose own movement into the quiet regions is over the threshold.
        region: ``(top, left, bottom, right)`` in input pixels, bottom/right inclusive, of the largest group's region
            (``regions[0]``; None if none).
        region_share: share of all probes whose largest gain lies in that region.
        regions: when ``fired``, one :class:`~lightning_xai.drift.evidence.AlertRegion` per class (or cluster of
            probes) of ``probe_indices``, largest group first.
        evidence: when ``fired``, the maps of ``probe_indices`` before and at the alert
            (:class:`~lightning_xai.drift.evidence.AlertEvidence`).
        num_probes: how many probes the evaluation had.
    """

    score: float
    threshold: float | None
    noise: float | None
    fired: bool = False
    probe_indices: tuple[int, ...] = ()
    region: tuple[int, int, int, int] | None = None
    region_share: float = 0.0
    candidate: bool = False
    confirmation: tuple[float, float] | None = None
    regions: tuple[AlertRegion, ...] = ()
    evidence: AlertEvidence | None = field(default=None, compare=False, repr=False)
    num_probes: int = 0


@dataclass
class _Candidate:
    origin: Tensor  # the distributions before the candidate's evaluation
    older: Tensor | None  # and the ones before those
    threshold: float
    noise: float
    origin_epoch: int = -1  # the epoch of `origin`
    origin_raw: Tensor | None = None  # its raw maps, for the evidence (in memory only, not in checkpoints)


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
    previous_raw: Tensor | None = None  # in memory only (the evidence's "before"), not in checkpoints


class ShiftDetector:
    """Alert when relevance moves, in many probes at once, into regions all of them used to ignore.

    Each evaluation, every probe's attribution map becomes a distribution of relevance over at most ``cells`` ×
    ``cells`` regions. The *quiet* regions are those where the probes' average distribution was below the uniform
    level at the previous evaluation and at the one before (so relevance returning to where it was is not new).
    Per probe, the detector measures the share of relevance that moved into the quiet regions since the previous
    evaluation (:func:`~lightning_xai.functional.novel_relevance`); the *score* is the mean over probes. An
    evaluation is a *candidate* when

        ``score >= threshold = max(floor, t × standard error, ratio × σ)``

    where the standard error is the spread of the per-probe movements at this evaluation divided by √P (random,
    per-probe jitter has a large spread; a shared cue moves every probe the same way), ``t`` is Student's
    one-sided ``1 − alpha`` quantile with ``P − 1`` degrees of freedom (a t-test across probes: 3.25 for 10
    probes at the default ``alpha``), and σ is the run's own evaluation-to-evaluation noise: the root mean square
    of its earlier movements *into* the quiet regions after the warm-up (the positive scores; a movement out of
    them, as maps sharpen, is not what a shortcut has to beat; at least ``calibration`` scores are needed before
    the detector may alert), so the default ``ratio`` is a one-sided 3σ rule. Only scores inside the noise band
    (below ``max(ratio × σ, floor)``) calibrate: a movement beyond it is not noise, whether or not it became a
    candidate.

    The alert comes at the next evaluation if the relevance *stayed*: the movement over both evaluations (from
    the one before the candidate to now, into the same quiet regions) must pass the same test, calibrated on the
    run's own movements over two evaluations: ``max(floor, t × its standard error, ratio × σ₂)``, and at least
    the candidate's threshold. A blip that goes back is dropped (and so is its return). The method
    then stays silent for ``cooldown`` evaluations. Fewer than 4 probes cannot show that a movement is shared,
    so the detector never alerts then.

    Args:
        calibration: evaluations after the warm-up needed before the detector may alert.
        alpha: the one-sided level of the test across probes.
        ratio: how many σ (the run's own noise) the movement must be.
        floor: the smallest share of relevance that must move, whatever the noise says.
        cells: regions per side of the grid the maps are pooled onto.
        cooldown: evaluations after an alert during which the method stays silent.

    Example::

        >>> det = ShiftDetector(calibration=2)
        >>> g = torch.Generator().manual_seed(0)
        >>> def maps():  # relevance on the object, with some jitter
        ...     m = torch.rand(8, 16, 16, generator=g) * 0.3
        ...     m[:, 5:11, 5:11] += 1.0
        ...     return m
        >>> for epoch in range(4):
        ...     d = det.update("gradcam", maps(), (32, 32), armed=True)
        >>> shortcut = maps(); shortcut[:, 0:2, 14:16] += 6.0  # every probe now also reads a corner
        >>> d = det.update("gradcam", shortcut, (32, 32), armed=True)
        >>> d.candidate, d.fired
        (True, False)
        >>> still = maps(); still[:, 0:2, 14:16] += 6.0  # and still does at the next evaluation
        >>> d = det.update("gradcam", still, (32, 32), armed=True)
        >>> d.fired, d.region
        (True, (0, 28, 3, 31))
    """

    def __init__(
        self,
        calibration: int = 2,
        alpha: float = 0.005,
        ratio: float = 3.0,
        floor: float = 0.01,
        cells: int = 8,
        cooldown: int = 3,
    ) -> None:
        for name, value, low in (("calibration", calibration, 0), ("cells", cells, 2), ("cooldown", cooldown, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`ShiftDetector({name}=...)` must be an int >= {low}, got {value!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
            raise ValueError(f"`ShiftDetector(alpha=...)` must be a number in (0, 0.5), got {alpha!r}.")
        for name, number in (("ratio", ratio), ("floor", floor)):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
                raise ValueError(f"`ShiftDetector({name}=...)` must be a finite number, got {number!r}.")
            if number < 0:
                raise ValueError(f"`ShiftDetector({name}=...)` must be >= 0, got {number!r}.")
        self.calibration, self.alpha, self.ratio, self.floor = calibration, float(alpha), float(ratio), float(floor)
        self.cells, self.cooldown = cells, cooldown
        self._states: dict[str, _MethodState] = {}

    def config(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration,
            "alpha": self.alpha,
            "ratio": self.ratio,
            "floor": self.floor,
            "cells": self.cells,
            "cooldown": self.cooldown,
        }

    def threshold(
        self, scores: list[float], standard_error: float, probes: int, ready: bool = False
    ) -> tuple[float | None, float | None]:
        """``(threshold, noise)`` for an evaluation of ``probes`` probes whose movements have ``standard_error``,
        after the run's earlier ``scores``; ``(None, None)`` while fewer than ``calibration`` scores are known.

        Example::

            >>> ShiftDetector().threshold([0.002, -0.004, 0.003], standard_error=0.005, probes=10)
            (0.016239, 0.005)
            >>> ShiftDetector().threshold([0.02, -0.03, 0.01], standard_error=0.001, probes=10)
            (0.03873, 0.01291)
        """
        if len(scores) < self.calibration and not ready:
            return None, None
        sigma = self.sigma(scores) or 0.0
        noise = max(standard_error, sigma)
        quantile = t_quantile(1 - self.alpha, probes - 1)  # infinite below 4 probes: no test can pass
        tested = math.inf if math.isinf(quantile) else quantile * standard_error  # never inf * 0 = nan
        threshold = max(self.floor, tested, self.ratio * sigma)
        return round(threshold, 6), round(noise, 6)

    def update(
        self,
        method: str,
        maps: Tensor,
        input_size: tuple[int, int],
        armed: bool,
        *,
        classes: Tensor | None = None,
        epoch: int = -1,
    ) -> Detection | None:
        """Feed one evaluation's raw maps ``(P, h, w)`` of ``method``; None when there is no previous map yet.

        ``armed`` is False during the warm-up (and when the training setup just changed): the score is measured
        but neither calibrates nor alerts, and a pending candidate is dropped. ``classes`` (``(P,)``, the class each
        probe is explained for) groups the alert's regions by class; ``epoch`` dates its evidence."""
        state = self._states.setdefault(method, _MethodState())
        raw = maps.detach().float().cpu()
        current = relevance_distribution(raw, self.cells)
        oldest, older, previous = state.oldest, state.older, state.previous
        state.oldest, state.older, state.previous = older, previous, current
        previous_raw, previous_epoch = state.previous_raw, state.previous_epoch
        state.previous_raw, state.previous_epoch = raw.clone(), epoch  # the caller may reuse its tensor
        armed_before, state.armed_before = state.armed_before, armed
        if previous is None or previous.shape != current.shape:
            state.candidate = None
            return None
        moved = novel_relevance(current, previous, common=True, older=older)
        score = float(moved.mean())
        count = moved.numel()
        standard_error = float(moved.std()) / math.sqrt(count) if count > 1 else math.inf
        threshold, noise = self.threshold(state.scores, standard_error, count)
        candidate, state.candidate = state.candidate, None
        if not armed:
            return Detection(score, None, None)
        if state.cooldown_left > 0:  # right after an alert: neither calibrate on it nor alert again
            state.cooldown_left -= 1
            return Detection(score, threshold, noise)
        confirmation = None
        if candidate is not None and candidate.origin.shape == current.shape:  # did the movement stay?
            since = novel_relevance(current, candidate.origin, common=True, older=candidate.older)
            spread = float(since.std()) / math.sqrt(count) if count > 1 else math.inf
            needed, _ = self.threshold(state.scores2, spread, count, ready=True)
            confirmation = (float(since.mean()), max(needed or 0.0, candidate.threshold))
            if confirmation[0] >= confirmation[1]:
                state.cooldown_left = self.cooldown
                over = tuple(int(i) for i in torch.nonzero(since >= confirmation[1]).flatten())
                return _fired(candidate, current, raw, over, classes, input_size, confirmation)
        if threshold is not None and score >= threshold:  # a candidate (never calibrated on) ...
            if candidate is not None:  # ... unless it undoes a candidate that did not last (a blip returning)
                return Detection(score, threshold, noise, confirmation=confirmation)
            state.candidate = _Candidate(previous, older, threshold, noise or 0.0, previous_epoch, previous_raw)
            return Detection(score, threshold, noise, candidate=True)
        sigma = self.sigma(state.scores)  # the noise band: ratio x sigma, never narrower than the floor
        if threshold is None or sigma is None or score < max(self.ratio * sigma, self.floor):  # beyond: not noise
            state.scores.append(score)
            two_ok = armed_before and candidate is None and older is not None and older.shape == current.shape
            if two_ok:  # and the movement over two evaluations, which the confirmation is judged against
                assert older is not None
                state.scores2.append(float(novel_relevance(current, older, common=True, older=oldest).mean()))
        return Detection(score, threshold, noise, confirmation=confirmation)

    @staticmethod
    def sigma(scores: list[float]) -> float | None:
        """The run's noise σ: the root mean square of its calibrated positive scores (None before any)."""
        return math.sqrt(sum(max(s, 0.0) ** 2 for s in scores) / len(scores)) if scores else None

    def state_dict(self) -> dict[str, Any]:
        def candidate(c: _Candidate | None) -> dict[str, Any] | None:
            return None if c is None else {k: v for k, v in dataclasses.asdict(c).items() if k != "origin_raw"}

        return {
            name: {
                "previous": s.previous,
                "older": s.older,
                "oldest": s.oldest,
                "scores": list(s.scores),
                "scores2": list(s.scores2),
                "armed_before": s.armed_before,
                "cooldown_left": s.cooldown_left,
                "candidate": candidate(s.candidate),
                "previous_epoch": s.previous_epoch,
            }
            for name, s in self._states.items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def candidate(c: dict[str, Any] | None) -> _Candidate | None:
            if c is None:
                return None
            epoch = int(c.get("origin_epoch", -1))
            return _Candidate(c["origin"], c.get("older"), float(c["threshold"]), float(c["noise"]), epoch)

        self._states = {
            name: _MethodState(
                previous=s.get("previous"),
                scores=[float(v) for v in s.get("scores", [])],
                cooldown_left=int(s["cooldown_left"]),
                candidate=candidate(s.get("candidate")),
                older=s.get("older"),
                oldest=s.get("oldest"),
                scores2=[float(v) for v in s.get("scores2", [])],
                armed_before=bool(s.get("armed_before", False)),
                previous_epoch=int(s.get("previous_epoch", -1)),
            )
            for name, s in state.items()
        }


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile (Cornish–Fisher expansion around the normal quantile; within 0.5 % of the exact value
    for ``dof >= 3``); ``inf`` below 3 degrees of freedom, where a spread of so few values says too little.

    Example::

        >>> round(t_quantile(0.995, 9), 2), t_quantile(0.995, 2)
        (3.25, inf)
    """
    if dof < 3:
        return math.inf
    z = float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))
    n = float(dof)
    return (
        z
        + (z**3 + z) / (4 * n)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3)
    )


def _fired(
    candidate: _Candidate,
    current: Tensor,
    raw: Tensor,
    over: tuple[int, ...],
    classes: Tensor | None,
    input_size: tuple[int, int],
    confirmation: tuple[float, float],
) -> Detection:
    """The alert's detection: where each class of the probes that moved gained, and their maps before and now."""
    if candidate.origin_raw is not None and candidate.origin_raw.shape == raw.shape:
        before, after = input_maps(candidate.origin_raw, input_size), input_maps(raw, input_size)
    else:  # resumed between the candidate and now: only the pooled maps were kept, show both pooled
        before, after = input_maps(candidate.origin, input_size), input_maps(current, input_size)
    classes = None if classes is None else classes.detach().cpu().long().flatten()
    regions = gain_regions(current, candidate.origin, candidate.older, over, classes, (after, before), input_size)
    region, share = None, 0.0
    if regions:
        top, left, bottom, right = regions[0].box
        region = (top, left, bottom - 1, right - 1)
        share = _share_in(current, candidate, regions[0].box, input_size)
    evidence = AlertEvidence(over, before[list(over)], after[list(over)], candidate.origin_epoch)
    return Detection(
        *confirmation,
        candidate.noise,
        True,
        over,
        region,
        share,
        confirmation=confirmation,
        regions=regions,
        evidence=evidence,
        num_probes=int(current.shape[0]),
    )


def _share_in(current: Tensor, candidate: _Candidate, box: tuple[int, int, int, int], size: tuple[int, int]) -> float:
    """The share of probes whose largest gain into the quiet regions lies in a cell that overlaps ``box``."""
    gain = (current - candidate.origin).clamp_min(0) * quiet_regions(candidate.origin, True, candidate.older)
    cells_h, cells_w = gain.shape[-2:]
    peak = gain.flatten(1).argmax(dim=1)
    rows, cols = peak // cells_w, peak % cells_w
    top, bottom = (rows * size[0]) // cells_h, ((rows + 1) * size[0] + cells_h - 1) // cells_h
    left, right = (cols * size[1]) // cells_w, ((cols + 1) * size[1] + cells_w - 1) // cells_w
    inside = (top < box[2]) & (bottom > box[0]) & (left < box[3]) & (right > box[1])
    return float(inside.double().mean())
