"""Integrated Gradients: Gauss–Legendre quadrature batched at the throughput knee, an automatic step count that
meets a completeness tolerance, and a per-call time budget.

Cost model: ``n_steps`` forward+backward passes (with respect to the input only) per probe, plus one forward
per probe for ``F(x)`` (none when the caller passes ``outputs=``, as the monitor does from its shared
prediction pass) and one forward for the shared baseline ``F(x')`` (the completeness check). The passes
run in chunks of whole probe groups (all probes × k steps) or, below one group, slices of the probes; the
chunk size is the measured throughput knee under a memory budget (:mod:`lightning_xai.explain.batching`).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from lightning_xai.explain.base import Explainer, Explanation, ForwardFn
from lightning_xai.explain.batching import KneeBatcher, WorkCursor, count_saved_bytes

#: step counts the automatic mode chooses from (about x1.5 apart)
STEP_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
#: where the automatic mode starts its first calibration
AUTO_START_STEPS = 4


def auto_internal_batch_size(num_probes: int, n_steps: int, target: int = 64) -> int:
    """A whole number of probe groups close to ``target`` samples per pass (a fixed rule, kept for callers that
    want one; :class:`IntegratedGradients` measures the knee instead).

    Example::

        >>> auto_internal_batch_size(8, 32), auto_internal_batch_size(100, 32)
        (64, 100)
    """
    steps_per_chunk = max(1, min(n_steps, target // max(num_probes, 1)))
    return num_probes * steps_per_chunk


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in (0, 1) and weights (summing to 1) of the ``n``-point Gauss–Legendre rule (Captum's too)."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return 0.5 * (nodes + 1.0), 0.5 * weights


class IntegratedGradients(Explainer):
    """Integrated Gradients: the path integral of gradients from a baseline to the input.

    Computes ``(x - x') * integral_0^1 dF(x' + a (x - x'))/dx da`` per input feature (Sundararajan et al.,
    2017, https://arxiv.org/abs/1703.01365) with Gauss–Legendre quadrature (the same nodes and weights as
    Captum's ``IntegratedGradients(method="gausslegendre")``; the result matches it to float rounding). The
    attribution is summed over channels into one map per probe; ``display`` is its absolute value.

    Completeness: exact IG satisfies ``sum(attr) = F(x) - F(x')``; the quadrature misses it by the
    *completeness gap*. ``diagnostics`` holds, per call: ``completeness_gap`` (per probe, absolute),
    ``relative_gap`` (``sum_i |gap_i| / sum_i |F(x_i) - F(x'_i)|`` over the probes, the same value for every
    probe), ``n_steps`` (steps of the returned result) and ``passes_per_probe`` (forward+backward passes spent
    per probe, including rejected tries of the automatic mode); with a time budget also ``budget_limited``
    (1 when the budget cut the steps). The monitor logs each as ``xai/integrated_gradients/<key>``.

    Args:
        n_steps: quadrature points (forward+backward passes per probe), or ``"auto"``: the fewest steps from
            :data:`STEP_LADDER` within ``[min_steps, max_steps]`` whose ``relative_gap <= tolerance``. The first
            call calibrates: from 4 steps it climbs the ladder (4, 6, 8, 12, 16, 24, ...; the gap need not
            fall monotonically, so no rung is skipped) until the tolerance holds, or descends while it holds
            (about 3x the chosen steps, once). Every call checks the gap of its own result for free and
            climbs when it fails; every ``recheck_every`` calls, when the gap is below half the tolerance,
            one rung lower is tried and kept if it passes (the interval doubles after a failed try).
        baseline: None (zeros), a float (constant image) or a tensor broadcastable to one probe.
        internal_batch_size: samples per forward/backward pass; None measures the throughput knee on the
            real work under ``memory_budget`` (see :mod:`lightning_xai.explain.batching`).
        tolerance: relative completeness gap the automatic mode must meet (default 5 %: the "within 5 %"
            convergence check that Sundararajan et al. recommend; 0.01 gives maps within a few % of converged).
        min_steps, max_steps: bounds of the automatic mode.
        recheck_every: calls between two tries of fewer steps in the automatic mode.
        memory_budget: bytes one pass may use (None: a quarter of free CUDA memory, or a tenth of the
            available RAM up to 2 GiB).
        max_batch: at most this many samples per pass (e.g. the training batch size: then IG never holds
            more activations than a training step does).
        max_seconds: a time budget per call (also per call via ``explain(..., max_seconds=)``): the step
            count is cut to what the measured cost per sample predicts fits, never below 1.

    Example::

        >>> lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> ig = IntegratedGradients(n_steps=8)
        >>> out = ig.explain(lin, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]))
        >>> tuple(out.raw.shape), bool(out.diagnostics["completeness_gap"].abs().max() < 1e-4)
        ((3, 2, 2), True)
        >>> int(IntegratedGradients(n_steps="auto").explain(lin, torch.rand(3, 1, 2, 2),
        ...     torch.tensor([0, 1, 0])).diagnostics["n_steps"][0])  # a linear model: the fewest steps allowed
        2
    """

    name = "integrated_gradients"
    display_normalization = "percentile"
    explain_keywords = frozenset({"outputs", "max_seconds"})

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
        memory_budget: int | None = None,
        max_batch: int | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self.auto = n_steps == "auto"
        if not self.auto:
            if isinstance(n_steps, bool) or not isinstance(n_steps, int):
                raise ValueError(f"`ig_steps` must be an int >= 1 or 'auto', got {n_steps!r}.")
            if n_steps < 1:
                raise ValueError(f"`ig_steps` must be >= 1, got {n_steps}.")
        if not tolerance > 0:
            raise ValueError(f"`tolerance` must be > 0, got {tolerance!r}.")
        if not 1 <= min_steps <= max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got min_steps={min_steps}, max_steps={max_steps}.")
        if recheck_every < 1:
            raise ValueError(f"`recheck_every` must be >= 1, got {recheck_every}.")
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"`ig_internal_batch_size` must be >= 1 or None, got {internal_batch_size}.")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"`max_batch` must be >= 1 or None, got {max_batch}.")
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"`max_seconds` must be > 0 or None, got {max_seconds!r}.")
        self.n_steps: int | Literal["auto"] = n_steps
        self.baseline = baseline
        self.internal_batch_size = internal_batch_size
        self.tolerance = float(tolerance)
        self.min_steps, self.max_steps = int(min_steps), int(max_steps)
        self.recheck_every = int(recheck_every)
        self.memory_budget = memory_budget
        self.max_batch = max_batch
        self.max_seconds = max_seconds
        ladder = [s for s in STEP_LADDER if self.min_steps <= s <= self.max_steps]
        self.ladder = tuple(sorted({*ladder, self.min_steps, self.max_steps}))
        self.passes_per_probe = float((self.max_steps if self.auto else int(n_steps)) + 1)  # type: ignore[arg-type]
        self.batcher = KneeBatcher(internal_batch_size, memory_budget, max_batch=max_batch)
        #: details of the last call (steps tried, batch sizes, seconds), for logs and benchmarks
        self.last_info: dict[str, Any] = {}
        self._reset_auto()
        self._seconds_per_sample: float | None = None
        self._shape_key: tuple[Any, ...] | None = None

    # ------------------------------------------------------------------------------------------ state
    def _reset_auto(self) -> None:
        self._rung: int | None = None
        self._since_check = 0
        self._check_interval = self.recheck_every
        self._last_relative_gap = math.inf

    @property
    def last_batch_size(self) -> int | None:
        """Samples per pass chosen so far (None while the knee is still being measured)."""
        return self.batcher.chosen

    @property
    def current_steps(self) -> int | None:
        """Steps the next call starts from (None before the automatic mode has calibrated)."""
        if not self.auto:
            return int(self.n_steps)  # type: ignore[arg-type]
        return None if self._rung is None else self.ladder[self._rung]

    def limit_batch(self, max_batch: int | None) -> None:
        """Cap the samples per pass, e.g. at the training batch size: then IG never holds more activations
        than one training step does (the monitor calls this when ``max_batch`` was not given)."""
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"`max_batch` must be >= 1 or None, got {max_batch}.")
        self.max_batch = max_batch
        self.batcher.max_batch = max_batch
        chosen = self.batcher.chosen
        if max_batch is not None and chosen is not None and chosen > max_batch and self.batcher.reason != "fixed":
            self.batcher = KneeBatcher(self.internal_batch_size, self.memory_budget, max_batch=max_batch)

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        if isinstance(self.baseline, Tensor):
            try:
                torch.broadcast_shapes(tuple(self.baseline.shape), tuple(example.shape))
            except RuntimeError:
                raise ValueError(
                    f"`ig_baseline` has shape {tuple(self.baseline.shape)}, which does not broadcast to a probe "
                    f"batch of shape {tuple(example.shape)}; pass one image (C, H, W), a float, or None for zeros."
                ) from None
        # a new model (or a new fit): measure its knee and calibrate its steps afresh
        self._reset_auto()
        self._seconds_per_sample = None
        self._shape_key = None

    # ------------------------------------------------------------------------------------------ helpers
    def _baselines(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """``(baseline expanded to the inputs, the distinct baseline rows to run F on)``."""
        if self.baseline is None:
            one = torch.zeros_like(inputs[:1])
        elif isinstance(self.baseline, Tensor):
            b = self.baseline.to(inputs)
            while b.ndim < inputs.ndim:
                b = b.unsqueeze(0)
            if b.shape[0] != 1:
                full = b.expand_as(inputs).contiguous()
                return full, full
            one = b.expand_as(inputs[:1]).contiguous()
        else:
            one = torch.full_like(inputs[:1], float(self.baseline))
        return one.expand_as(inputs), one

    def _ensure_batcher(self, inputs: Tensor) -> None:
        key = (tuple(inputs.shape[1:]), inputs.device, inputs.dtype)
        if key != self._shape_key:
            self._shape_key = key
            self.batcher = KneeBatcher(self.internal_batch_size, self.memory_budget, max_batch=self.max_batch)
            self._seconds_per_sample = None

    # ------------------------------------------------------------------------------------------ explain
    def explain(
        self,
        forward: ForwardFn,
        inputs: Tensor,
        targets: Tensor,
        *,
        outputs: Tensor | None = None,
        max_seconds: float | None = None,
    ) -> Explanation:
        """Attribute ``forward(inputs)[i, targets[i]]`` for every probe ``i``.

        ``outputs`` (``forward(inputs)``, if the caller has it) saves the forward for ``F(x)``; ``max_seconds``
        is a time budget for this call (the smaller of it and the instance's ``max_seconds`` applies)."""
        start = time.perf_counter()
        limits = [b for b in (self.max_seconds, max_seconds) if b is not None]
        budget = min(limits) if limits else None
        deadline = None if budget is None else start + float(budget)
        x = inputs.detach()
        num = x.shape[0]
        device = x.device
        targets = torch.as_tensor(targets, device=device).long().view(-1)
        if targets.numel() == 1 and num > 1:
            targets = targets.expand(num)
        self._ensure_batcher(x)
        base, base_rows = self._baselines(x)
        diff = x - base
        with torch.no_grad():
            out_x = forward(x) if outputs is None else outputs.detach().to(device)
            f_x = out_x.gather(1, targets.view(-1, 1)).squeeze(1)
            out_b = forward(base_rows)
            f_b = out_b[:, targets].diagonal() if out_b.shape[0] == num else out_b[0, targets]
        delta = (f_x - f_b).double()
        run = _Run(self, forward, x, base, diff, targets, delta, deadline)

        if self.auto:
            result = self._explain_auto(run)
        else:
            result = run.integrate(run.affordable(int(self.n_steps)))  # type: ignore[arg-type]
        attr = result.attr.float()
        raw = attr.sum(dim=1) if attr.ndim == 4 else attr.reshape(attr.shape[0], *attr.shape[-2:])
        steps_used = result.n_steps
        spent = sum(n for n, _ in run.tries)
        diagnostics = {
            "completeness_gap": result.gap.abs().float(),
            "relative_gap": torch.full((num,), float(result.relative), device=device),
            "n_steps": torch.full((num,), float(steps_used), device=device),
            "passes_per_probe": torch.full((num,), float(spent), device=device),
        }
        if budget is not None:
            diagnostics["budget_limited"] = torch.full((num,), float(run.limited), device=device)
        elapsed = time.perf_counter() - start
        self.last_info = {
            "tries": list(run.tries),
            "n_steps": steps_used,
            "seconds": elapsed,
            "budget": budget,
            "budget_limited": run.limited,
            "batch": self.batcher.state(),
        }
        return Explanation(raw=raw, display=raw.abs(), diagnostics=diagnostics)

    def _explain_auto(self, run: _Run) -> _Result:
        ladder, tol = self.ladder, self.tolerance
        last = len(ladder) - 1

        def passes(result: _Result) -> bool:
            return result.relative <= tol

        if self._rung is None:  # calibrate: climb rung by rung from AUTO_START_STEPS (or descend while it holds)
            i = min(range(len(ladder)), key=lambda j: abs(ladder[j] - max(AUTO_START_STEPS, self.min_steps)))
            result = run.try_steps(ladder[i])
            if passes(result):
                while i > 0 and run.can_afford(ladder[i - 1]):
                    lower = run.try_steps(ladder[i - 1])
                    if not passes(lower):
                        break
                    result, i = lower, i - 1
            else:
                while not passes(result) and i < last and run.can_afford(ladder[i + 1]):
                    i += 1
                    result = run.try_steps(ladder[i])
            # the rung of the result (below it when the budget cut the steps: resume climbing from there)
            self._rung = max([j for j in range(len(ladder)) if ladder[j] <= result.n_steps] or [0])
            self._finish_auto(result)
            return result

        i = self._rung
        self._since_check += 1
        if (
            self._since_check >= self._check_interval
            and i > 0
            and self._last_relative_gap <= tol / 2
            and run.can_afford(ladder[i - 1])
        ):
            self._since_check = 0
            lower = run.try_steps(ladder[i - 1])
            if passes(lower):
                self._rung = i - 1
                self._check_interval = self.recheck_every
                self._finish_auto(lower)
                return lower
            self._check_interval = min(2 * self._check_interval, 8 * self.recheck_every)
        result = run.try_steps(ladder[i])
        if result.n_steps == ladder[i]:
            while not passes(result) and i < last and run.can_afford(ladder[i + 1]):
                i += 1
                result = run.try_steps(ladder[i])
            self._rung = i
        self._finish_auto(result)
        return result

    def _finish_auto(self, result: _Result) -> None:
        self._last_relative_gap = result.relative
        if self._rung is not None:
            self.passes_per_probe = float(self.ladder[self._rung] + 1)


@dataclass
class _Result:
    attr: Tensor
    gap: Tensor
    relative: float
    n_steps: int


class _Run:
    """One ``explain`` call: the fixed inputs, the endpoints, the budget, and the quadratures tried."""

    def __init__(
        self,
        ig: IntegratedGradients,
        forward: ForwardFn,
        x: Tensor,
        base: Tensor,
        diff: Tensor,
        targets: Tensor,
        delta: Tensor,
        deadline: float | None,
    ) -> None:
        self.ig, self.forward = ig, forward
        self.x, self.base, self.diff, self.targets, self.delta = x, base, diff, targets, delta
        self.deadline = deadline
        self.tries: list[tuple[int, float]] = []
        self.limited = False

    # ---------------------------------------------------------------------------------------- budget
    def _seconds_per_sample(self) -> float:
        ig = self.ig
        if ig._seconds_per_sample is None:  # no estimate yet: time one small pass (cold, so an over-estimate)
            size = min(self.x.shape[0], 8)
            half = torch.full((1,), 0.5, dtype=torch.float64)
            weight = torch.ones(1, dtype=torch.float64)
            scratch = torch.zeros_like(self.x[:size])
            _sync(self.x.device)
            t0 = time.perf_counter()
            self._pass(range(0, 1), slice(0, size), half, weight, scratch, None)
            _sync(self.x.device)
            ig._seconds_per_sample = (time.perf_counter() - t0) / size
        return ig._seconds_per_sample

    def _predicted(self, steps: int) -> float:
        return steps * self.x.shape[0] * self._seconds_per_sample()

    def can_afford(self, steps: int) -> bool:
        if self.deadline is None:
            return True
        return time.perf_counter() + self._predicted(steps) <= self.deadline

    def affordable(self, steps: int) -> int:
        """``steps``, cut to what fits in the remaining budget (at least 1)."""
        if self.deadline is None or self.can_afford(steps):
            return steps
        per_step = max(self._predicted(1), 1e-9)
        fit = int((self.deadline - time.perf_counter()) // per_step)
        self.limited = True
        return max(1, min(steps, fit))

    def try_steps(self, steps: int) -> _Result:
        if self.deadline is not None and not self.can_afford(steps):
            steps = self.affordable(steps)
        return self.integrate(steps)

    # ---------------------------------------------------------------------------------------- quadrature
    def integrate(self, n_steps: int) -> _Result:
        """Attributions, per-probe gap and the aggregate relative gap of the ``n_steps``-point rule."""
        ig, x = self.ig, self.x
        num = x.shape[0]
        alphas_np, weights_np = gauss_legendre(n_steps)
        alphas = torch.from_numpy(alphas_np)
        weights = torch.from_numpy(weights_np)
        total = torch.zeros_like(x, dtype=torch.float32 if not x.is_floating_point() else x.dtype)
        cursor = WorkCursor(num, n_steps)
        batcher = ig.batcher
        _sync(x.device)
        t_start = time.perf_counter()
        while not cursor.done:
            chunk = cursor.next(batcher.target(num, n_steps, x.device), even=not batcher.ramping)
            timing = batcher.timing(chunk.batch)
            measuring = batcher.measuring_memory(chunk.batch)
            if timing:
                _sync(x.device)
            t0 = time.perf_counter()
            saved = self._pass(chunk.steps, chunk.probes, alphas, weights, total, measuring)
            seconds = None
            if timing:
                _sync(x.device)
                seconds = time.perf_counter() - t0
            batcher.record(chunk.batch, seconds, saved, x.device, num)
        batcher.finish_if_stuck(num * n_steps)
        _sync(x.device)
        elapsed = time.perf_counter() - t_start
        sps = elapsed / (num * n_steps)
        ig._seconds_per_sample = sps if ig._seconds_per_sample is None else 0.5 * (ig._seconds_per_sample + sps)
        attr = total * self.diff
        sums = attr.reshape(num, -1).double().sum(dim=1)
        gap = sums - self.delta
        scale = float(self.delta.abs().sum())
        relative = float(gap.abs().sum()) / scale if scale > 1e-6 * num else 0.0
        self.tries.append((n_steps, relative))
        return _Result(attr, gap, relative, n_steps)

    def _pass(
        self,
        steps: range,
        probes: slice,
        alphas: Tensor,
        weights: Tensor,
        total: Tensor,
        measuring: bool | None,
    ) -> int | None:
        """One forward+backward pass over ``steps`` × ``probes``; adds the weighted gradients into ``total``."""
        x = self.x
        k = len(steps)
        base, diff = self.base[probes], self.diff[probes]
        count = base.shape[0]
        shape = (k, *([1] * x.ndim))
        a = alphas[steps.start : steps.stop].to(device=x.device, dtype=x.dtype).view(shape)
        w = weights[steps.start : steps.stop].to(device=x.device, dtype=x.dtype).view(shape)
        scaled = (base.unsqueeze(0) + a * diff.unsqueeze(0)).reshape(k * count, *x.shape[1:])
        scaled.requires_grad_(True)
        targets = self.targets[probes].repeat(k).view(-1, 1)
        ctx = count_saved_bytes() if measuring else nullcontext([None])
        with ctx as saved:
            out = self.forward(scaled)
            selected = out.gather(1, targets).sum()
        (grad,) = torch.autograd.grad(selected, scaled)
        total[probes] += (grad.view(k, count, *x.shape[1:]) * w).sum(dim=0)
        return saved[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
