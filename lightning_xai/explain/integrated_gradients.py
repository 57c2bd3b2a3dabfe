"""Integrated Gradients: Captum's Gauss–Legendre IG with batch sizes from sizes (never timings), an automatic step
count that meets a completeness tolerance, and per-call limits. Cost: ``n_steps`` forward+backward passes per probe,
plus one forward per probe for ``F(x)`` (none with ``outputs=``) and one for the baseline."""

from __future__ import annotations

import bisect
import math
import time
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_xai.explain._ig_run import _Result, _Run
from lightning_xai.explain._ig_run import plan_batches as plan_batches  # re-exported
from lightning_xai.explain.base import (
    Explainer,
    Explanation,
    ForwardFn,
    check_baseline,
    check_baseline_shape,
    check_float,
    check_int,
)
from lightning_xai.functional.shift import colour_share

#: step counts the automatic mode chooses from (about x1.5 apart)
STEP_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
#: where the automatic mode starts its first calibration
AUTO_START_STEPS = 4
#: samples per pass when neither ``internal_batch_size`` nor ``max_batch`` caps the batch
DEFAULT_BATCH = 64
#: the automatic search spends at most this many times ``max_steps`` passes per probe in one call
SEARCH_PASS_FACTOR = 2
#: the first automatic call searches on this share of the probes, then runs the steps found on the others
CALIBRATION_SHARE = 0.25


def fewer_steps(current: int, factor: float = 0.75, floor: int = 8) -> int | None:
    """The :data:`STEP_LADDER` rung for about ``factor`` × ``current`` steps: always lower, never below ``floor``
    (None when ``current`` is at the floor). What the monitor's overhead budget caps IG's steps at."""
    lower = [s for s in STEP_LADDER if floor <= s < current]
    fitting = [s for s in lower if s <= current * factor]
    return max(fitting) if fitting else (lower[0] if lower else None)


class IntegratedGradients(Explainer):
    """Integrated Gradients (Sundararajan et al., 2017, https://arxiv.org/abs/1703.01365): Captum's
    ``IntegratedGradients(multiply_by_inputs=True)`` with ``method="gausslegendre"``, summed over channels;
    ``display`` is its absolute value. ``diagnostics``: ``completeness_gap`` (per probe: ``sum(attr) - (F(x) -
    F(x'))``), ``relative_gap`` (``sum |gap| / sum |F(x) - F(x')|``), ``n_steps``, ``passes_per_probe``, for inputs
    of several channels ``colour_share`` (:func:`~lightning_xai.functional.shift.colour_share`: the share of the
    attribution in the differences between channels, before they are summed) and, with a time budget,
    ``budget_limited``. The limits of one call (time, steps, batch) are arguments of :meth:`explain`.

    Args:
        n_steps: quadrature points, or ``"auto"``: the fewest :data:`STEP_LADDER` steps in ``[min_steps,
            max_steps]`` with ``relative_gap <= tolerance``, searched from 4 steps up (doubling) on the quarter of the
            probes with the largest ``|F(x) - F(x')|`` (:data:`CALIBRATION_SHARE`), then checked by every call for
            free (it climbs when the gap fails; every ``recheck_every`` calls one rung lower is tried). A call
            spends at most ``SEARCH_PASS_FACTOR × max_steps`` passes per probe, and no more than ``search_seconds``.
        baseline: a float, one value per channel, or a tensor broadcastable to one probe; None: in a monitor the
            input that displays as black (from ``denormalize=``), else zeros.
        internal_batch_size: samples per pass, in whole probe groups (:func:`plan_batches`); None: the call's
            ``max_batch`` (in a monitor: the training batch size), else :data:`DEFAULT_BATCH`.
        tolerance: the relative gap ``"auto"`` must meet (5 %: the paper's check).
        min_steps, max_steps, recheck_every: bounds and re-check interval of ``"auto"``.

    Example::

        >>> lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> out = IntegratedGradients(n_steps=8).explain(lin, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]))
        >>> tuple(out.raw.shape), bool(out.diagnostics["completeness_gap"].abs().max() < 1e-4)
        ((3, 2, 2), True)
        >>> int(IntegratedGradients(n_steps="auto").explain(lin, torch.rand(3, 1, 2, 2),
        ...     torch.tensor([0, 1, 0])).diagnostics["n_steps"][0])  # linear: 4 at first, re-checks go lower
        4
    """

    name = "integrated_gradients"
    display_normalization = "percentile"
    explain_keywords = frozenset({"outputs", "max_seconds", "max_steps", "max_batch", "search_seconds"})

    def __init__(
        self,
        n_steps: int | Literal["auto"] = "auto",
        baseline: float | Tensor | None = None,
        internal_batch_size: int | None = None,
        *,
        tolerance: float = 0.05,
        min_steps: int = 2,
        max_steps: int = 64,
        recheck_every: int = 5,
    ) -> None:
        self.auto = isinstance(n_steps, str) and n_steps == "auto"
        if isinstance(n_steps, str) and not self.auto:
            raise ValueError(
                f"`IntegratedGradients(n_steps=...)` must be an int >= 1 or 'auto', got {n_steps!r}; pass "
                "n_steps='auto' or a number of steps such as n_steps=32."
            )
        where = "IntegratedGradients"
        self.n_steps: int | Literal["auto"] = "auto" if self.auto else check_int("n_steps", n_steps, 1, where=where)
        self.tolerance = check_float("tolerance", tolerance, 0.0, low_open=True, where=where)
        self.min_steps = check_int("min_steps", min_steps, 1, where=where)
        self.max_steps = check_int("max_steps", max_steps, self.min_steps, where=where)
        self.recheck_every = check_int("recheck_every", recheck_every, 1, where=where)
        self.baseline = check_baseline(baseline, where)
        self.internal_batch_size = check_int(
            "internal_batch_size", internal_batch_size, 1, allow_none=True, where=where
        )
        #: passes per probe the automatic search may spend in one call (any two adjacent rungs fit)
        self.max_search_passes = SEARCH_PASS_FACTOR * self.max_steps
        ladder = [s for s in STEP_LADDER if self.min_steps <= s <= self.max_steps]
        self.ladder = tuple(sorted({*ladder, self.min_steps, self.max_steps}))
        self.passes_per_probe = float((self.max_steps if self.n_steps == "auto" else self.n_steps) + 1)
        self.last_batch_size: int | None = None  # Captum's ``internal_batch_size`` of the last pass
        self.last_info: dict[str, Any] = {}  # the last call's tries, seconds and budget, for logs and benchmarks
        self._reset()

    def _reset(self) -> None:
        self._rung: int | None = None
        self._since_check = 0
        self._check_interval = self.recheck_every
        self._last_gap = math.inf
        self._seconds_per_sample: float | None = None
        self._shape_key: tuple[Any, ...] | None = None

    @property
    def current_steps(self) -> int | None:
        """Steps the next call starts from (None before the automatic mode has calibrated)."""
        if self.n_steps != "auto":
            return self.n_steps
        return None if self._rung is None else self.ladder[self._rung]

    def config(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps, "baseline": self.baseline}  # a tensor is digested in the state key

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        check_baseline_shape("IntegratedGradients(baseline=...)", self.baseline, tuple(example.shape[1:]))
        self._reset()  # a new model (or a new fit): calibrate its steps and its cost afresh

    def _baselines(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """``(baseline expanded to the inputs, the distinct baseline rows to run F on)``."""
        if isinstance(self.baseline, Tensor):
            b = self.baseline.to(inputs)
            b = b.reshape(*([1] * (inputs.ndim - b.ndim)), *b.shape)
            if b.shape[0] != 1:
                full = b.expand_as(inputs).contiguous()
                return full, full
            one = b.expand_as(inputs[:1]).contiguous()
        else:
            one = torch.full_like(inputs[:1], float(self.baseline or 0.0))
        return one.expand_as(inputs), one

    def explain(
        self,
        forward: ForwardFn,
        inputs: Tensor,
        targets: Tensor,
        *,
        outputs: Tensor | None = None,
        max_seconds: float | None = None,
        max_steps: int | None = None,
        max_batch: int | None = None,
        search_seconds: float | None = None,
    ) -> Explanation:
        """Attribute ``forward(inputs)[i, targets[i]]`` for every probe ``i``, within this call's limits.

        Args:
            outputs: ``forward(inputs)``, if the caller has it: saves the forward for ``F(x)``.
            max_seconds: a time budget: the steps are cut to what fits, never below 1 (``budget_limited``).
            max_steps: at most this many steps (a lower rung in ``"auto"``); ``n_steps`` (the state key) stays.
            max_batch: at most this many samples per pass (the smaller of it and ``internal_batch_size``).
            search_seconds: the automatic search tries no more steps once this time is spent."""
        start = time.perf_counter()
        max_steps = check_int("max_steps", max_steps, 1, allow_none=True)
        max_batch = check_int("max_batch", max_batch, 1, allow_none=True)
        batch = min((c for c in (self.internal_batch_size, max_batch) if c), default=DEFAULT_BATCH)
        x = inputs.detach()
        num, device = x.shape[0], x.device
        targets = torch.as_tensor(targets, device=device).long().view(-1).expand(num)
        key = (tuple(x.shape[1:]), device, x.dtype)
        if key != self._shape_key:  # another input: the cost estimate no longer holds
            self._shape_key, self._seconds_per_sample = key, None
        base, base_rows = self._baselines(x)
        with torch.no_grad():
            f_x = (forward(x) if outputs is None else outputs.detach().to(device)).gather(1, targets.view(-1, 1))
            out_b = forward(base_rows)
            f_b = out_b[:, targets].diagonal() if out_b.shape[0] == num else out_b[0, targets]
        delta = (f_x.squeeze(1) - f_b).double()
        deadline = None if max_seconds is None else start + float(max_seconds)
        run = _Run(self, forward, x, base, targets, delta, deadline, batch)
        if self.n_steps == "auto":
            cap = max_steps or self.max_steps
            result = self._explain_auto(run, tuple(s for s in self.ladder if s <= cap) or (cap,), search_seconds)
        else:
            result = run.try_steps(min(self.n_steps, max_steps or self.n_steps))
        attr = result.attr.float()
        raw = attr.sum(dim=1) if attr.ndim == 4 else attr.reshape(num, *attr.shape[-2:])
        diagnostics = {
            "completeness_gap": result.gap.abs().float(),
            "relative_gap": torch.full((num,), float(result.relative), device=device),
            "n_steps": torch.full((num,), float(result.n_steps), device=device),
            "passes_per_probe": torch.full((num,), float(run.spent), device=device),
        }
        if attr.ndim == 4 and attr.shape[1] > 1:  # what the relevance is made of: colour vs brightness
            diagnostics["colour_share"] = colour_share(attr).float()
        if max_seconds is not None:
            diagnostics["budget_limited"] = torch.full((num,), float(run.limited), device=device)
        tries = [(r.n_steps, r.relative) for r in run.calibration + run.results]
        seconds = time.perf_counter() - start
        self.last_info = dict(tries=tries, n_steps=result.n_steps, seconds=seconds, budget=max_seconds)
        self.last_info["budget_limited"] = run.limited
        return Explanation(raw=raw, display=raw.abs(), diagnostics=diagnostics)

    def _explain_auto(self, run: _Run, ladder: tuple[int, ...], search: float | None) -> _Result:
        tol, last = self.tolerance, len(ladder) - 1

        def fits(on: _Run, i: int, then: int = 0) -> bool:  # one more try (and ``then`` passes after) within caps
            if on.spent + ladder[i] + then > self.max_search_passes or not on.can_afford(ladder[i]):
                return False
            return search is None or time.perf_counter() - on.started + on.predicted(ladder[i]) <= search

        def climb(on: _Run, i: int, result: _Result) -> tuple[int, _Result]:  # doubling: under 2x the rung found
            while result.relative > tol and i < last:
                up = next((j for j in range(i + 1, last) if ladder[j] >= 2 * ladder[i]), last)  # twice the steps
                if not fits(on, up):
                    break
                i, result = up, on.try_steps(ladder[up])
            return i, result

        if self._rung is None:  # calibrate: from AUTO_START_STEPS, climbing (never descending: see recheck_every)
            i = min(range(len(ladder)), key=lambda j: abs(ladder[j] - max(AUTO_START_STEPS, self.min_steps)))
            calibration = run.calibration_part(CALIBRATION_SHARE)
            if calibration is None:
                result = run.try_steps(ladder[i])
            else:  # search on a few probes, then only the rung found on the others (then climb on all if need be)
                part, index = calibration
                i, found = climb(part, i, part.try_steps(ladder[i]))
                result = run.complete(part, index, found)
        else:  # the gap of this call's own result is the check; now and then, try one rung lower
            i = self._rung = min(self._rung, last)  # a lower ``max_steps`` than before: its top rung
            self._since_check += 1
            if (
                self._since_check >= self._check_interval
                and i > 0
                and self._last_gap <= tol / 2
                and fits(run, i - 1, ladder[i])
            ):
                self._since_check, lower = 0, run.try_steps(ladder[i - 1])
                if lower.relative <= tol:
                    self._rung, self._check_interval = i - 1, self.recheck_every
                    return self._finish_auto(lower, ladder)
                self._check_interval = min(2 * self._check_interval, 8 * self.recheck_every)
            result = run.try_steps(ladder[i])
        if result.n_steps == ladder[i]:
            i, result = climb(run, i, result)
            self._rung = i
        elif self._rung is None:  # the budget cut the calibration: resume climbing from below the result
            self._rung = max(0, bisect.bisect_right(ladder, result.n_steps) - 1)
        return self._finish_auto(result, ladder)

    def _finish_auto(self, result: _Result, ladder: tuple[int, ...]) -> _Result:
        self._last_gap = result.relative
        self.passes_per_probe = float(ladder[self._rung or 0] + 1)
        return result
