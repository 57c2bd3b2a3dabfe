"""One Integrated Gradients call: its inputs and endpoints, its limits and the quadratures it tried (each Captum's
``IntegratedGradients.attribute(method="gausslegendre")``, batched by :func:`plan_batches`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch import Tensor

from lightning_xai.explain.base import ForwardFn
from lightning_xai.explain.forward import synchronize

if TYPE_CHECKING:
    from lightning_xai.explain.integrated_gradients import IntegratedGradients


def plan_batches(num_probes: int, n_steps: int, cap: int) -> list[tuple[int, int]]:
    """``(probes, Captum's internal_batch_size)`` of each Captum call, for passes of at most ``cap`` samples, from
    sizes alone. Captum packs ``internal_batch_size // probes`` whole steps of all probes per pass and never fewer
    than all probes, so probes beyond the cap are split into slices (sizes within one of each other), one call each.
    The steps are spread evenly over the fewest passes (no small tail pass)."""
    slices = math.ceil(num_probes / max(1, cap))
    plan = []
    for probes in (num_probes // slices + (i < num_probes % slices) for i in range(slices)):
        steps = max(1, min(n_steps, cap // probes))
        plan.append((probes, probes * math.ceil(n_steps / math.ceil(n_steps / steps))))
    return plan


@dataclass
class _Result:
    attr: Tensor
    gap: Tensor
    relative: float
    n_steps: int


def _relative(gap: Tensor, delta: Tensor) -> float:
    """``sum_i |gap_i| / sum_i |F(x_i) - F(x'_i)|`` (0 when the outputs hardly move)."""
    scale = float(delta.abs().sum())
    return float(gap.abs().sum()) / scale if scale > 1e-6 * delta.numel() else 0.0


@dataclass
class _Run:
    """One ``explain`` call (or a part of its probes), its ``deadline`` and ``batch`` cap, and the quadratures tried."""

    ig: IntegratedGradients
    forward: ForwardFn
    x: Tensor
    base: Tensor
    targets: Tensor
    delta: Tensor
    deadline: float | None
    batch: int
    started: float = field(default_factory=time.perf_counter)
    results: list[_Result] = field(default_factory=list)
    limited: bool = False
    extra: float = 0.0  # passes per probe spent outside ``results`` (a calibration on part of the probes)
    calibration: list[_Result] = field(default_factory=list)  # the tries of that calibration

    @property
    def spent(self) -> float:
        """Passes per probe spent in this call so far."""
        return sum(r.n_steps for r in self.results) + self.extra

    def predicted(self, steps: int) -> float:
        if self.ig._seconds_per_sample is None:  # no estimate yet: measure it with a 1-step try
            self.integrate(1)
        assert self.ig._seconds_per_sample is not None
        return steps * self.x.shape[0] * self.ig._seconds_per_sample

    def can_afford(self, steps: int) -> bool:
        return self.deadline is None or time.perf_counter() + self.predicted(steps) <= self.deadline

    def try_steps(self, steps: int) -> _Result:
        """The ``steps``-point quadrature, cut to what fits in the remaining budget (at least 1 step)."""
        if self.deadline is not None and not self.can_afford(steps):
            fit = int((self.deadline - time.perf_counter()) // max(self.predicted(1), 1e-9))
            steps, self.limited = max(1, min(steps, fit)), True
            done = [r for r in self.results if r.n_steps == steps]
            if done:
                return done[-1]
        return self.integrate(steps)

    def part(self, index: Tensor) -> _Run:
        """The same call restricted to the probes at ``index`` (same clock, same limits)."""
        x, base, targets, delta = (t[index] for t in (self.x, self.base, self.targets, self.delta))
        return _Run(self.ig, self.forward, x, base, targets, delta, self.deadline, self.batch, started=self.started)

    def calibration_part(self, share: float) -> tuple[_Run, Tensor] | None:
        """The part of the ``ceil(share × probes)`` probes with the largest ``|F(x) - F(x')|`` (they weigh most in
        the relative gap) and their index; None when that is all of them or under a time budget."""
        num = self.x.shape[0]
        size = max(1, math.ceil(share * num))
        if size >= num or self.deadline is not None:
            return None
        index = torch.argsort(self.delta.abs(), descending=True, stable=True)[:size].sort().values
        return self.part(index), index

    def complete(self, part: _Run, index: Tensor, found: _Result) -> _Result:
        """``found`` (the part's result) completed by the same quadrature on the other probes."""
        num = self.x.shape[0]
        rest = torch.ones(num, dtype=torch.bool, device=index.device)
        rest[index] = False
        other = self.part(rest.nonzero().view(-1)).integrate(found.n_steps)
        attr, gap = found.attr.new_empty((num, *found.attr.shape[1:])), found.gap.new_empty(num)
        attr[index], attr[rest], gap[index], gap[rest] = found.attr, other.attr, found.gap, other.gap
        self.calibration = part.results
        self.extra += (part.spent - found.n_steps) * index.numel() / num
        self.results.append(_Result(attr, gap, _relative(gap, self.delta), found.n_steps))
        return self.results[-1]

    def integrate(self, n_steps: int) -> _Result:
        """Captum's ``n_steps``-point Gauss–Legendre IG: attributions, per-probe and relative gap."""
        x, num = self.x, self.x.shape[0]
        plan = plan_batches(num, n_steps, self.batch)
        sizes = [probes for probes, _ in plan]
        slices = zip(x.split(sizes), self.base.split(sizes), self.targets.split(sizes), plan, strict=True)
        captum = CaptumIG(self.forward, multiply_by_inputs=True)
        synchronize(x.device)
        t0 = time.perf_counter()
        parts = [
            captum.attribute(xs, bs, target=ts, n_steps=n_steps, method="gausslegendre", internal_batch_size=batch)
            for xs, bs, ts, (_, batch) in slices
        ]
        synchronize(x.device)
        sps, old = (time.perf_counter() - t0) / (num * n_steps), self.ig._seconds_per_sample
        self.ig._seconds_per_sample = sps if old is None else 0.5 * (old + sps)
        self.ig.last_batch_size = max(batch for _, batch in plan)
        attr = torch.cat(parts).detach()
        gap = attr.reshape(num, -1).double().sum(dim=1) - self.delta
        self.results.append(_Result(attr, gap, _relative(gap, self.delta), n_steps))
        return self.results[-1]
