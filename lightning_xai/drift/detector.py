"""The default drift detector. Training moves explanations too, so a distance from a reference cannot tell learning
from a shortcut; the direction can: a shortcut pulls many probes' relevance into the same new place."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from lightning_xai.drift._state import _add_squares, _Anchor, _Candidate, _MethodState, _standard_error, _still
from lightning_xai.drift.detection import Detection, Verify, _fired, followed_regions, with_regions
from lightning_xai.drift.evidence import known_fields, primitives
from lightning_xai.explain.base import check_bool, check_float, check_int
from lightning_xai.functional.shift import blank_maps, ignored_relevance, novel_relevance, relevance_distribution
from lightning_xai.functional.stats import min_binomial_count, t_quantile


class ShiftDetector:
    """Alert when relevance moves, in many probes at once, into regions all of them used to ignore.

    Maps are pooled onto at most ``cells`` × ``cells`` regions; the *quiet* ones were below the uniform level in the
    probes' average map at the two previous evaluations. The *score* is the mean over probes of the relevance that
    moved into them (:func:`~lightning_xai.functional.shift.novel_relevance`); a *candidate* when
    ``score >= max(floor, t × standard error, ratio × σ)``: ``t`` Student's one-sided ``1 − alpha`` quantile with
    ``P − 1`` degrees of freedom (a shared cue moves every probe alike, jitter does not; below 4 probes, never), σ the
    root mean square of the run's earlier positive scores inside the noise band (at least ``calibration`` of them).
    The alert comes at the next evaluation if the movement over both passes the same test, calibrated on the run's
    two-evaluation movements; a blip that goes back is dropped.

    Args:
        calibration: evaluations after the warm-up needed before the detector may alert.
        alpha: the one-sided level of the test across probes.
        ratio: how many σ (the run's own noise) the movement must be.
        floor: the smallest share of relevance that must move, whatever the noise says.
        cells: regions per side of the grid the maps are pooled onto.
        subset: also a candidate when enough probes (the binomial tail at ``alpha`` of ``tail``) each moved over
            ``ratio`` × the run's per-probe σ: a cue on some classes only. Off by default: on the alert_truth suite
            it added five detections and seventeen benign alerts (docs/alerts.md).
        gradual: also a candidate when the movement accumulated since an anchor, beyond ``allowance`` × σ per
            evaluation, reaches ``ratio`` × σ and passes the mean's test: a takeover spread over epochs. Off by
            default: on the suite it added no detection and two benign alerts.
        tail: the chance one probe passes its level under the run's noise, for ``subset``.
        allowance: the σ per evaluation ``gradual`` does not accumulate.
        follow: the monitor puts each candidate to the model (:mod:`~lightning_xai.explain.behaviour`: does the
            prediction follow what moved, copied from another class's probe, more often than with the weights of the
            drift reference?): passed, the alert comes at once; not followed, the candidate is dropped. On the
            alert_truth suite it removed every benign alert and added two detections (docs/alerts.md).
        follow_ratio: the σ a candidate must be when the model will be asked (``ratio`` otherwise); the subset
            test is on then.

    Example::

        >>> det, g = ShiftDetector(calibration=2), torch.Generator().manual_seed(0)
        >>> maps = torch.rand(6, 8, 16, 16, generator=g) * 0.3  # 6 evaluations of 8 probes: jitter, relevance on
        >>> maps[:, :, 5:11, 5:11] += 1.0  # the object and, from the 5th evaluation on, on a corner in every probe
        >>> maps[4:, :, 0:2, 14:16] += 6.0
        >>> found = [det.update("gradcam", m, (32, 32), armed=True) for m in maps]
        >>> [(d.candidate, d.fired) for d in found[4:]], found[5].region  # a candidate, then the alert
        ([(True, False), (False, True)], (0, 28, 3, 31))
    """

    def __init__(
        self,
        calibration: int = 2,
        alpha: float = 0.005,
        ratio: float = 3.0,
        floor: float = 0.01,
        cells: int = 8,
        subset: bool = False,
        gradual: bool = False,
        tail: float = 0.02,
        allowance: float = 1.0,
        follow: bool = True,
        follow_ratio: float = 1.5,
    ) -> None:
        where = "ShiftDetector"
        self.calibration = check_int("calibration", calibration, 0, where=where)
        self.alpha = check_float("alpha", alpha, 0, 0.5, low_open=True, high_open=True, where=where)
        self.ratio = check_float("ratio", ratio, 0, where=where)
        self.floor = check_float("floor", floor, 0, where=where)
        self.cells = check_int("cells", cells, 2, where=where)
        self.subset, self.gradual = check_bool("subset", subset, where), check_bool("gradual", gradual, where)
        self.tail = check_float("tail", tail, 0, 1, low_open=True, high_open=True, where=where)
        self.allowance = check_float("allowance", allowance, 0, where=where)
        self.follow = check_bool("follow", follow, where)
        self.follow_ratio = check_float("follow_ratio", follow_ratio, 0, where=where)
        self._states: dict[str, _MethodState] = {}
        self._recent: dict[str, dict[int, Tensor]] = {}  # method -> epoch -> raw maps (in memory, the last 3)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_recent": {}}  # in-memory maps for the boxes: not pickled (spawn, DDP, copies)

    def config(self) -> dict[str, Any]:
        names = (
            "calibration",
            "alpha",
            "ratio",
            "floor",
            "cells",
            "subset",
            "gradual",
            "tail",
            "allowance",
            "follow",
            "follow_ratio",
        )
        return {name: getattr(self, name) for name in names}

    def threshold(
        self, scores: list[float], standard_error: float, probes: int, ready: bool = False, ratio: float | None = None
    ) -> tuple[float | None, float | None]:
        """``(threshold, noise)`` after the run's ``scores``; ``(None, None)`` while calibrating (unless ``ready``)."""
        if len(scores) < self.calibration and not ready:
            return None, None
        sigma = self.sigma(scores) or 0.0
        quantile = t_quantile(1 - self.alpha, probes - 1)  # infinite below 4 probes: no test can pass
        tested = math.inf if math.isinf(quantile) else quantile * standard_error  # never inf * 0 = nan
        ratio = self.ratio if ratio is None else ratio
        return round(max(self.floor, tested, ratio * sigma), 6), round(max(standard_error, sigma), 6)

    def min_probes(self, probes: int) -> int:
        """How many of ``probes`` must pass the per-probe level at once: the smallest count that ``probes``
        independent probes, each over its level with probability ``tail`` under the run's noise, reach with a
        probability of at most ``alpha`` (the binomial tail: the multiple-testing cost of testing every probe)."""
        return min_binomial_count(probes, self.tail, self.alpha)

    def probe_level(self, squares: list[float], samples_needed: int, ratio: float | None = None) -> float | None:
        """The level one probe's movement must pass: ``ratio`` × the run's per-probe σ (the root mean square of its
        calibrated per-probe movements, positive parts), never below the floor; None while calibrating."""
        total, count = squares
        if count < max(samples_needed, 1):
            return None
        ratio = self.ratio if ratio is None else ratio
        return round(max(self.floor, ratio * math.sqrt(total / count)), 6)

    def update(
        self,
        method: str,
        maps: Tensor,
        input_size: tuple[int, int],
        armed: bool,
        *,
        classes: Tensor | None = None,
        epoch: int = -1,
        cooldown: int = 3,
        verify: Verify | None = None,
    ) -> Detection | None:
        """Feed one evaluation's raw maps ``(P, h, w)`` of ``method``; None when there is no previous map yet. Unless
        ``armed`` (the warm-up, a changed setup), the score neither calibrates nor alerts and a candidate is dropped.
        ``classes`` (``(P,)``) groups the alert's regions; ``epoch`` dates its evidence. After an alert the method
        neither calibrates nor alerts for ``cooldown`` armed evaluations (the ``AlertTracker``'s).

        With ``verify`` (the transplant test against the model at the drift reference), candidates are sought at
        ``follow_ratio`` with the subset test on, and each new one is put to the model: passed, the alert comes at
        once; not followed (no more pairs gained than lost, and some changed), it is dropped; otherwise (leaning
        its way, no pair changed, or untestable) it stays a candidate only if the maps alone make it one (the mean's
        test at ``ratio``), and at its confirmation the model is asked again (failed: dropped)."""
        state = self._states.setdefault(method, _MethodState())
        raw = maps.detach().float().cpu()
        current, blank, previous_blank = relevance_distribution(raw, self.cells), blank_maps(raw), state.previous_blank
        state.previous_blank = blank  # no relevance now or before: no movement (at this evaluation and the next)
        oldest, older, previous = state.oldest, state.older, state.previous
        state.oldest, state.older, state.previous = older, previous, current
        previous_raw, previous_epoch = state.previous_raw, state.previous_epoch
        state.previous_raw, state.previous_epoch = raw.clone(), epoch  # the caller may reuse its tensor
        armed_before, state.armed_before = state.armed_before, armed
        if previous is None or previous.shape != current.shape:
            state.candidate, state.anchor = None, None
            return None
        moved = _still(novel_relevance(current, previous, common=True, older=older), blank, previous_blank)
        score, count = float(moved.mean()), moved.numel()
        tested = verify is not None  # the model will be asked: candidates at follow_ratio, the subset test on
        threshold, noise = self.threshold(state.scores, _standard_error(moved), count, ratio=self._ratio(tested))
        candidate, state.candidate = state.candidate, None
        if not armed:
            state.anchor = None
            return Detection(score, None, None)
        if state.cooldown_left > 0:  # right after an alert: neither calibrate on it nor alert again
            state.cooldown_left -= 1
            state.anchor = None
            return Detection(score, threshold, noise)
        confirmation = None
        if candidate is not None and candidate.origin.shape == current.shape:  # did the movement stay?
            since = _still(novel_relevance(current, candidate.origin, common=True, older=candidate.older), blank)
            confirmation, over = self._confirm(state, candidate, since, count)
            if over:  # with verify, a candidate that leaned its way is asked again, a step later
                fired = self._fire(
                    method, epoch, candidate, (current, raw, over, classes), input_size, confirmation, verify
                )
                if fired.follow is None or fired.follow.passed:
                    state.cooldown_left = cooldown
                    state.anchor = None
                    return fired
                return Detection(score, candidate.threshold, noise, confirmation=confirmation, follow=fired.follow)
        before = (previous, older, previous_epoch, previous_raw)
        found = self._candidate(state, moved, threshold, noise, before, current, count, tested, blank)
        if found is not None:  # a candidate (never calibrated on) ...
            state.anchor = None
            if candidate is not None:  # ... unless it undoes a candidate that did not last (a blip returning)
                return Detection(score, found.threshold, noise, confirmation=confirmation)
            if verify is not None:
                over = tuple(int(i) for i in torch.nonzero(moved >= found.threshold).flatten()) or tuple(range(count))
                found_at = (current, raw, over, classes)
                # the value of the test that passed: the subset test's is the mean of the probes past its level (as
                # when a candidate is confirmed), so the alert never shows a score under its threshold
                value = float(moved[list(over)].mean()) if found.probe_level is not None else score
                fired = self._fire(method, epoch, found, found_at, input_size, (value, found.threshold), verify)
                follow = fired.follow
                if follow is not None and follow.passed:  # the model follows what moved: the alert, now
                    state.cooldown_left = cooldown
                    return fired
                if follow is not None and follow.lost >= follow.gained and follow.gained + follow.lost > 0:
                    # the model does not follow (no more pairs gained than lost): not a shortcut it took. A test in
                    # which no pair changed says nothing: the maps decide, and the model is asked again later
                    return Detection(score, found.threshold, noise, follow=follow)
                classic = self._classic(found, score, state)  # untestable: what the maps alone would alert on
                if classic is None:
                    return Detection(score, threshold, noise)
                found = classic
            state.candidate = found
            return Detection(score, found.threshold, noise, candidate=True)
        sigma = self.sigma(state.scores)  # the noise band: ratio x sigma, never narrower than the floor
        if threshold is None or sigma is None or score < max(self.ratio * sigma, self.floor):  # beyond: not noise
            state.scores.append(score)
            _add_squares(state.probe_squares, moved)
            if armed_before and candidate is None and older is not None and older.shape == current.shape:
                # and the movement over two evaluations, which the confirmation is judged against
                two = _still(novel_relevance(current, older, common=True, older=oldest), blank)
                state.scores2.append(float(two.mean()))
                _add_squares(state.probe_squares2, two)
        return Detection(score, threshold, noise, confirmation=confirmation)

    def _candidate(
        self,
        state: _MethodState,
        moved: Tensor,
        threshold: float | None,
        noise: float | None,
        before: tuple[Tensor, Tensor | None, int, Tensor | None],
        current: Tensor,
        count: int,
        tested: bool = False,
        blank: Tensor | None = None,
    ) -> _Candidate | None:
        """This evaluation's candidate, by the first test that passes: the mean over all probes, a subset of probes
        each over its own level, or the movement accumulated over several evaluations; None if none passes."""
        if threshold is None or math.isinf(threshold):  # calibrating, or too few probes to show a shared movement
            return None
        origin, older, origin_epoch, origin_raw = before
        score = float(moved.mean())
        if score >= threshold:
            return _Candidate(origin, older, threshold, noise or 0.0, origin_epoch, origin_raw)
        subset = self.subset or tested
        level = self.probe_level(state.probe_squares, self.calibration * count, self._ratio(tested)) if subset else None
        if level is not None and int((moved >= level).sum()) >= self.min_probes(count):
            return _Candidate(origin, older, level, noise or 0.0, origin_epoch, origin_raw, level)
        sigma = self.sigma(state.scores)
        if not self.gradual or not sigma:
            return None
        if state.anchor is None or state.anchor.origin.shape != current.shape:
            if score <= self.allowance * sigma:
                return None
            state.anchor = _Anchor(origin, older, origin_epoch, origin_raw)  # the first step over the allowance
        anchor = state.anchor
        anchor.steps += 1
        # the movement since the anchor into the places quiet then (telescoping: later steps count even where the
        # first ones already made the place relevant), beyond the allowance per step
        accumulated = _still(novel_relevance(current, anchor.origin, common=True, older=anchor.older), blank)
        beyond = float(accumulated.mean()) - anchor.steps * self.allowance * sigma  # the CUSUM
        if beyond <= 0.0:
            state.anchor = None
            return None
        if beyond < self.ratio * sigma:
            return None
        needed, _ = self.threshold(state.scores, _standard_error(accumulated), count)
        if needed is None or float(accumulated.mean()) < needed:
            return None
        return _Candidate(anchor.origin, anchor.older, needed, noise or 0.0, anchor.origin_epoch, anchor.origin_raw)

    def _confirm(
        self, state: _MethodState, candidate: _Candidate, since: Tensor, count: int
    ) -> tuple[tuple[float, float], tuple[int, ...]]:
        """``((value, needed), probes)``: whether the candidate's movement stayed, judged against the run's movements
        over two evaluations; ``probes`` (empty when it did not) are those whose own movement passed."""
        needed, _ = self.threshold(state.scores2, _standard_error(since), count, ready=True)
        confirmation = (float(since.mean()), max(needed or 0.0, candidate.threshold))
        if confirmation[0] >= confirmation[1]:
            return confirmation, tuple(int(i) for i in torch.nonzero(since >= confirmation[1]).flatten())
        if candidate.probe_level is None:
            return confirmation, ()
        level2 = self.probe_level(state.probe_squares2, 1) or 0.0
        level = max(candidate.probe_level, level2)
        over = tuple(int(i) for i in torch.nonzero(since >= level).flatten())
        if len(over) < self.min_probes(count):
            return (float(since.mean()), confirmation[1]), ()
        return (float(since[list(over)].mean()), level), over

    def _fire(
        self,
        method: str,
        epoch: int,
        candidate: _Candidate,
        now: tuple[Tensor, Tensor, tuple[int, ...], Tensor | None],
        input_size: tuple[int, int],
        confirmation: tuple[float, float],
        verify: Verify | None,
    ) -> Detection:
        """The alert's detection for ``candidate`` at ``epoch`` (``now``: pooled and raw maps, the probes that
        moved, their classes; boxes on the finest remembered maps) and, with ``verify``, the model's answer in its
        ``follow`` (None when it has no regions or cannot be asked)."""
        current, raw, over, classes = now
        finer, window = self._finer(method, raw, epoch, candidate.origin_epoch, input_size)
        fired = _fired(candidate, current, raw, over, classes, input_size, confirmation, finer, window)
        if verify is None or not fired.regions:
            return fired
        ignored = ignored_relevance(candidate.origin, candidate.older)
        follow = verify(fired.regions, ignored, candidate.origin_epoch)
        if follow is None or not follow.passed or follow.kind == "colour":  # a colour alert names every class
            return replace(fired, follow=follow)
        named = followed_regions(fired.regions, verify, candidate.origin_epoch)  # the alert names what it follows
        return replace(with_regions(fired, named, current, candidate, input_size), follow=follow)

    def _ratio(self, tested: bool) -> float:
        """The σ a candidate's movement must be: ``follow_ratio`` when the model will be asked, else ``ratio``."""
        return min(self.ratio, self.follow_ratio) if tested else self.ratio

    def _classic(self, found: _Candidate, score: float, state: _MethodState) -> _Candidate | None:
        """``found`` (made at ``follow_ratio``) as a candidate without the transplant test, or None: the mean's test
        at ``ratio``; the subset test only where it was asked for (``subset=True``)."""
        if found.probe_level is not None:
            return found if self.subset else None
        needed = max(found.threshold, self.ratio * (self.sigma(state.scores) or 0.0))
        return replace(found, threshold=needed) if score >= needed else None

    def remember(self, method: str, epoch: int, maps: Tensor) -> None:
        """Keep ``method``'s raw maps of ``epoch`` (the last 3 epochs, in memory): an alert of one remembered method
        places its boxes on the finest remembered maps of the same evaluations. The monitor remembers every method's
        maps before feeding any, so that the finer maps of this evaluation are there."""
        if epoch < 0:
            return
        recent = self._recent.setdefault(method, {})
        recent[epoch] = maps.detach().float().cpu()
        for old in sorted(recent)[:-3]:
            del recent[old]

    def _finer(
        self, method: str, raw: Tensor, epoch: int, origin_epoch: int, input_size: tuple[int, int]
    ) -> tuple[tuple[Tensor, Tensor] | None, tuple[int, int] | None]:
        """``((after, before), window)``: the raw maps at ``epoch`` and ``origin_epoch`` of the remembered method with
        the most cells, if it has more than ``raw`` (e.g. Integrated Gradients at input resolution for a Grad-CAM
        alert), and one detector cell of its grid in input pixels; ``(None, None)`` when there is none, or when
        ``method`` is not remembered itself (its maps are not of the same kind, e.g. the colour parts)."""
        if method not in self._recent or epoch < 0 or origin_epoch < 0 or origin_epoch == epoch:
            return None, None
        cells = raw.shape[-2] * raw.shape[-1]
        best: tuple[Tensor, Tensor] | None = None
        for other, recent in self._recent.items():
            after, before = recent.get(epoch), recent.get(origin_epoch)
            if other == method or after is None or before is None or after.shape != before.shape:
                continue
            if after.ndim == 3 and after.shape[0] == raw.shape[0] and after.shape[-2] * after.shape[-1] > cells:
                best, cells = (after, before), after.shape[-2] * after.shape[-1]
        if best is None:
            return None, None
        grid = [min(n, self.cells) for n in best[0].shape[-2:]]
        return best, (max(1, round(input_size[0] / grid[0])), max(1, round(input_size[1] / grid[1])))

    def silence(self, method: str, evaluations: int) -> None:
        """Neither calibrate nor alert on ``method`` for ``evaluations`` armed evaluations, and drop what it was
        building (another test of the same method alerted: the ``AlertTracker`` silences the method as a whole)."""
        if (state := self._states.get(method)) is not None:
            state.cooldown_left = max(state.cooldown_left, evaluations)
            state.candidate, state.anchor = None, None

    @staticmethod
    def sigma(scores: list[float]) -> float | None:
        """The run's noise σ: the root mean square of its calibrated positive scores (None before any)."""
        return math.sqrt(sum(max(s, 0.0) ** 2 for s in scores) / len(scores)) if scores else None

    def state_dict(self) -> dict[str, Any]:
        """Pooled maps and primitives (the raw maps stay in memory), so it loads with ``weights_only=True``."""
        return primitives(self._states)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._states = {}
        for name, saved in state.items():
            values = known_fields(_MethodState, saved)
            if values.get("candidate") is not None:
                values["candidate"] = _Candidate(**known_fields(_Candidate, values["candidate"]))
            if values.get("anchor") is not None:
                values["anchor"] = _Anchor(**known_fields(_Anchor, values["anchor"]))
            self._states[name] = _MethodState(**values)


__all__ = ["Detection", "ShiftDetector", "Verify", "min_binomial_count", "t_quantile"]
