"""Integrated Gradients performance features, tested for behaviour (never for speed).

- the quadrature equals Captum's Gauss–Legendre IG whatever the chunking (probe groups, probe slices, ramp);
- passes are batched: counted forward calls, no pass per probe, the memory cap and ``max_batch`` hold;
- the knee ramp: fed synthetic timings, it stops at the knee and picks the smallest size near the best;
- ``n_steps="auto"``: fewest ladder steps meeting the tolerance, climbs when the model gets rougher, tries
  fewer steps periodically, logs its diagnostics through the monitor;
- ``max_seconds``: the step count is cut to the budget, flagged, never below one step.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from conftest import TinyCNN, loaders, trainer_kwargs
from torch import Tensor, nn

from lightning_xai import AttributionMonitor
from lightning_xai.explain import IntegratedGradients
from lightning_xai.explain.batching import KneeBatcher, WorkCursor, count_saved_bytes
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.integrated_gradients import STEP_LADDER, gauss_legendre


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, stride=2),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()


class Counting(nn.Module):
    """Wraps a model and records the batch size of every forward call (and whether grad was on)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append((x.shape[0], torch.is_grad_enabled() and x.requires_grad))
        return self.model(x)


def _probes(n: int = 6, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 5


def _captum(model: nn.Module, x: Tensor, targets: Tensor, n: int) -> Tensor:
    attr = CaptumIG(model).attribute(x.clone(), target=targets.tolist(), n_steps=n, method="gausslegendre")
    return attr.sum(dim=1)


# ------------------------------------------------------------------------------------------ correctness


def test_gauss_legendre_matches_captum_nodes() -> None:
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters("gausslegendre")
    for n in (1, 2, 5, 32):
        nodes, weights = gauss_legendre(n)
        assert torch.allclose(torch.tensor(nodes), torch.tensor(alphas(n), dtype=torch.float64))
        assert torch.allclose(torch.tensor(weights), torch.tensor(step_sizes(n), dtype=torch.float64))
        assert math.isclose(weights.sum(), 1.0)


@pytest.mark.parametrize("internal_batch_size", [None, 1, 4, 7, 12, 1000], ids=lambda b: f"batch-{b}")
def test_matches_captum_for_any_chunking(internal_batch_size: int | None) -> None:
    model = _cnn()
    x, targets = _probes()
    expected = _captum(model, x, targets, 10)
    ig = IntegratedGradients(n_steps=10, internal_batch_size=internal_batch_size)
    with training_state_guard(model):
        for _ in range(3):  # the knee ramp changes the chunking from call to call: same answer
            got = ig.explain(model, x.clone(), targets).raw
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_completeness_diagnostics_are_consistent() -> None:
    model = _cnn()
    x, targets = _probes()
    with training_state_guard(model):
        out = IntegratedGradients(n_steps=6).explain(model, x.clone(), targets)
        delta = (model(x) - model(torch.zeros_like(x))).gather(1, targets.view(-1, 1)).squeeze(1).double()
    gap = out.raw.double().sum(dim=(1, 2)) - delta
    torch.testing.assert_close(out.diagnostics["completeness_gap"].double(), gap.abs(), rtol=1e-4, atol=1e-5)
    relative = float(gap.abs().sum() / delta.abs().sum())
    assert out.diagnostics["relative_gap"].shape == (6,)
    assert float(out.diagnostics["relative_gap"][0]) == pytest.approx(relative, rel=1e-4, abs=1e-7)
    assert out.diagnostics["n_steps"].tolist() == [6.0] * 6
    assert out.diagnostics["passes_per_probe"].tolist() == [6.0] * 6
    assert "budget_limited" not in out.diagnostics


def test_per_probe_baseline_tensor_is_supported() -> None:
    model = _cnn()
    x, targets = _probes(4)
    baseline = torch.randn(4, 3, 8, 8)
    expected = CaptumIG(model).attribute(
        x.clone(), baselines=baseline, target=targets.tolist(), n_steps=5, method="gausslegendre"
    )
    with training_state_guard(model):
        got = IntegratedGradients(n_steps=5, baseline=baseline).explain(model, x.clone(), targets)
    torch.testing.assert_close(got.raw, expected.sum(dim=1), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------ batching


def test_fixed_batch_runs_whole_probe_groups() -> None:
    counting = Counting(_cnn())
    x, targets = _probes(8)
    with training_state_guard(counting):
        IntegratedGradients(n_steps=32, internal_batch_size=64).explain(counting, x.clone(), targets)
    grad_calls = [b for b, grad in counting.calls if grad]
    assert grad_calls == [64, 64, 64, 64]  # 8 probes x 8 steps per pass, 4 passes
    endpoint_calls = [b for b, grad in counting.calls if not grad]
    assert endpoint_calls == [8, 1]  # F(x) for the probes, F(baseline) once (shared)


def test_uneven_steps_are_split_evenly() -> None:
    cursor = WorkCursor(num_probes=4, n_steps=12)
    sizes = []
    while not cursor.done:
        sizes.append(cursor.next(32, even=True).batch)
    assert sizes == [24, 24]  # not 32 + 16


def test_below_one_group_the_probes_are_sliced_not_looped() -> None:
    counting = Counting(_cnn())
    x, targets = _probes(8)
    with training_state_guard(counting):
        IntegratedGradients(n_steps=3, internal_batch_size=4).explain(counting, x.clone(), targets)
    grad_calls = [b for b, grad in counting.calls if grad]
    assert grad_calls == [4] * 6  # 2 slices of 4 probes per step, 3 steps


def test_knee_mode_never_runs_one_probe_per_pass() -> None:
    counting = Counting(_cnn())
    x, targets = _probes(16)
    ig = IntegratedGradients(n_steps=16)
    with training_state_guard(counting):
        for _ in range(4):
            ig.explain(counting, x.clone(), targets)
    grad_calls = [b for b, grad in counting.calls if grad]
    assert min(grad_calls) >= 8
    assert sum(grad_calls) == 4 * 16 * 16


def test_max_batch_bounds_every_pass() -> None:
    counting = Counting(_cnn())
    x, targets = _probes(8)
    ig = IntegratedGradients(n_steps=32, max_batch=16)
    with training_state_guard(counting):
        for _ in range(3):
            ig.explain(counting, x.clone(), targets)
    assert max(b for b, grad in counting.calls if grad) <= 16


def test_memory_budget_caps_the_batch_from_measured_bytes() -> None:
    model = _cnn()
    x, targets = _probes(8)
    with training_state_guard(model):
        with count_saved_bytes() as one:
            model(torch.randn(1, 3, 8, 8, requires_grad=True))
        with count_saved_bytes() as two:
            model(torch.randn(2, 3, 8, 8, requires_grad=True))
        plain = two[0] - one[0]  # activation bytes per sample, input included
        first = IntegratedGradients(n_steps=32)
        for _ in range(2):
            first.explain(model, x.clone(), targets)
    measured = first.batcher.per_sample_bytes()
    assert measured is not None and plain <= measured <= 1.5 * plain  # + the gathered targets, the pass's own
    budget = int(1.5 * measured * 20)  # room for 20 samples with the safety factor
    counting = Counting(model)
    ig = IntegratedGradients(n_steps=32, memory_budget=budget)
    with training_state_guard(counting):
        for _ in range(4):
            ig.explain(counting, x.clone(), targets)
    assert ig.batcher.memory_cap() == 20
    assert max(b for b, grad in counting.calls if grad) <= 20
    assert ig.last_batch_size is not None and ig.last_batch_size <= 20


def test_count_saved_bytes_counts_each_storage_once() -> None:
    x = torch.ones(10, 10, requires_grad=True)
    with count_saved_bytes() as total:
        y = x.exp()  # saves its result (400 bytes)
        y * y  # saves y twice: same storage
    assert total[0] == 400


def _feed(batcher: KneeBatcher, num_probes: int, n_steps: int, rate: dict[int, float], calls: int = 20) -> list[int]:
    """Drive the ramp with synthetic timings: ``rate[b]`` samples/s at batch ``b``."""
    seen = []
    for _ in range(calls):
        cursor = WorkCursor(num_probes, n_steps)
        while not cursor.done:
            chunk = cursor.next(batcher.target(num_probes, n_steps), even=not batcher.ramping)
            seconds = chunk.batch / rate.get(chunk.batch, 1.0) if batcher.timing(chunk.batch) else None
            batcher.record(chunk.batch, seconds, 1000 * chunk.batch, num_probes=num_probes)
            seen.append(chunk.batch)
        batcher.finish_if_stuck(num_probes * n_steps)
    return seen


def test_ramp_stops_at_the_knee_and_picks_the_smallest_near_best() -> None:
    rates = {8: 100.0, 16: 180.0, 32: 240.0, 64: 245.0, 128: 200.0, 256: 150.0}
    batcher = KneeBatcher()
    seen = _feed(batcher, 8, 32, rates)
    assert batcher.chosen == 32  # 64 gains < 5 % over 32; 32 is within 5 % of the best
    assert max(seen) == 64  # never tried 128
    assert batcher.reason == "knee"


def test_ramp_uses_a_two_point_model_to_skip_useless_doublings() -> None:
    # t(b) = 0.01 + 0.001 b: the rate saturates at 1000/s; from 32 -> 64 the model predicts < 5 %
    rates = {b: b / (0.01 + 0.001 * b) for b in (8, 16, 32, 64, 128, 256, 512)}
    batcher = KneeBatcher()
    seen = _feed(batcher, 8, 64, rates)
    assert batcher.chosen is not None and batcher.chosen <= 256
    assert max(seen) <= 2 * batcher.chosen


def test_ramp_respects_the_memory_cap() -> None:
    batcher = KneeBatcher(memory_budget=int(1.5 * 1000 * 24))  # 1000 bytes/sample in _feed: cap 24
    seen = _feed(batcher, 8, 32, {8: 10.0, 16: 20.0, 24: 30.0, 32: 40.0, 64: 80.0})
    assert max(seen) <= 24
    assert batcher.chosen is not None and batcher.chosen <= 24


def test_ramp_ends_when_the_work_is_too_small_to_go_further() -> None:
    batcher = KneeBatcher()
    _feed(batcher, 4, 2, {8: 100.0})  # 4 probes x 2 steps = 8 samples per call
    assert batcher.chosen == 8 and batcher.reason == "work"


# ------------------------------------------------------------------------------------------ automatic steps


class Rough(nn.Module):
    """A scalar model whose integrand along the path gets rougher with ``freq`` (sin of a projection)."""

    def __init__(self, freq: float) -> None:
        super().__init__()
        self.freq = freq
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(3 * 8 * 8, generator=g) / 8)

    def forward(self, x: Tensor) -> Tensor:
        z = x.flatten(1) @ self.w
        return torch.stack([torch.sin(self.freq * z) + z, -z], dim=1)


def _steps_needed(model: nn.Module, x: Tensor, targets: Tensor, tol: float, ladder: list[int]) -> int:
    for n in ladder:
        out = IntegratedGradients(n_steps=n).explain(model, x.clone(), targets)
        if float(out.diagnostics["relative_gap"][0]) <= tol:
            return n
    return ladder[-1]


def test_auto_picks_the_fewest_ladder_steps_meeting_the_tolerance() -> None:
    x, _ = _probes(6)
    targets = torch.zeros(6, dtype=torch.long)
    model = Rough(freq=3.0)
    ladder = [s for s in STEP_LADDER if 2 <= s <= 64]
    with training_state_guard(model):
        expected = _steps_needed(model, x, targets, 0.01, ladder)
        ig = IntegratedGradients(n_steps="auto", tolerance=0.01)
        out = ig.explain(model, x.clone(), targets)
    assert 2 < expected < 64  # the test model needs some, but not all, steps
    assert int(out.diagnostics["n_steps"][0]) == expected
    assert float(out.diagnostics["relative_gap"][0]) <= 0.01
    assert int(out.diagnostics["passes_per_probe"][0]) >= expected  # calibration tries are counted
    assert ig.current_steps == expected
    assert ig.passes_per_probe == expected + 1


def test_auto_on_a_linear_model_uses_the_fewest_steps_allowed() -> None:
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x, targets = _probes(5)
    targets = targets % 4
    ig = IntegratedGradients(n_steps="auto", min_steps=2)
    with training_state_guard(lin):
        out = ig.explain(lin, x.clone(), targets)
    assert int(out.diagnostics["n_steps"][0]) == 2


def test_auto_climbs_when_the_model_gets_rougher_and_descends_when_it_smooths() -> None:
    x, _ = _probes(6)
    targets = torch.zeros(6, dtype=torch.long)
    model = Rough(freq=0.5)
    ig = IntegratedGradients(n_steps="auto", tolerance=0.01, recheck_every=2)
    steps = []
    with training_state_guard(model):
        steps.append(int(ig.explain(model, x.clone(), targets).diagnostics["n_steps"][0]))
        model.freq = 4.0  # the model changed: the free gap check of the next call fails, it climbs
        out = ig.explain(model, x.clone(), targets)
        steps.append(int(out.diagnostics["n_steps"][0]))
        assert float(out.diagnostics["relative_gap"][0]) <= 0.01
        model.freq = 0.0  # linear again: a periodic re-check tries one rung lower and keeps it
        for _ in range(12):
            steps.append(int(ig.explain(model, x.clone(), targets).diagnostics["n_steps"][0]))
    assert steps[1] > steps[0]
    assert steps[-1] < steps[1]
    assert steps == sorted(steps[:2]) + sorted(steps[2:], reverse=True)  # monotone phases, no oscillation


def test_auto_respects_max_steps() -> None:
    x, _ = _probes(4)
    targets = torch.zeros(4, dtype=torch.long)
    model = Rough(freq=40.0)
    ig = IntegratedGradients(n_steps="auto", tolerance=1e-6, max_steps=12)
    with training_state_guard(model):
        out = ig.explain(model, x.clone(), targets)
    assert int(out.diagnostics["n_steps"][0]) == 12
    assert float(out.diagnostics["relative_gap"][0]) > 1e-6  # reported honestly


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_steps": "fast"}, r"`ig_steps` must be an int >= 1 or 'auto'"),
        ({"n_steps": 0}, r"`ig_steps` must be >= 1, got 0"),
        ({"n_steps": "auto", "tolerance": 0}, r"`tolerance` must be > 0"),
        ({"min_steps": 8, "max_steps": 4}, r"min_steps <= max_steps"),
        ({"max_seconds": 0}, r"`max_seconds` must be > 0"),
        ({"internal_batch_size": 0}, r"`ig_internal_batch_size` must be >= 1"),
        ({"max_batch": 0}, r"`max_batch` must be >= 1"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IntegratedGradients(**kwargs)


# ------------------------------------------------------------------------------------------ time budget


class Slow(nn.Module):
    """Sleeps per sample of every gradient pass, so a budget must cut steps."""

    def __init__(self, model: nn.Module, seconds_per_sample: float) -> None:
        super().__init__()
        self.model, self.seconds = model, seconds_per_sample

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            time.sleep(self.seconds * x.shape[0])
        return self.model(x)


def test_time_budget_cuts_steps_and_flags_it() -> None:
    model = Slow(_cnn(), 0.002)
    x, targets = _probes(4)
    ig = IntegratedGradients(n_steps=64, internal_batch_size=16)
    with training_state_guard(model):
        free = ig.explain(model, x.clone(), targets)
        limited = ig.explain(model, x.clone(), targets, max_seconds=0.05)  # 64 steps need >= 0.5 s
    assert int(free.diagnostics["n_steps"][0]) == 64
    steps = int(limited.diagnostics["n_steps"][0])
    assert 1 <= steps < 64
    assert float(limited.diagnostics["budget_limited"][0]) == 1.0
    assert ig.last_info["budget_limited"] is True


def test_time_budget_applies_to_auto_and_never_goes_below_one_step() -> None:
    model = Slow(Rough(freq=6.0), 0.01)
    x, _ = _probes(4)
    targets = torch.zeros(4, dtype=torch.long)
    ig = IntegratedGradients(n_steps="auto", tolerance=1e-4, max_seconds=1e-4)
    with training_state_guard(model):
        out = ig.explain(model, x.clone(), targets)
    assert int(out.diagnostics["n_steps"][0]) == 1
    assert float(out.diagnostics["budget_limited"][0]) == 1.0


def test_generous_budget_changes_nothing() -> None:
    model = _cnn()
    x, targets = _probes(4)
    ig = IntegratedGradients(n_steps=8, max_seconds=60.0)
    with training_state_guard(model):
        out = ig.explain(model, x.clone(), targets)
    assert int(out.diagnostics["n_steps"][0]) == 8
    assert float(out.diagnostics["budget_limited"][0]) == 0.0


# ------------------------------------------------------------------------------------------ in the monitor


def test_monitor_with_auto_steps_logs_the_step_count(tmp_path: Any) -> None:
    train, val = loaders()
    monitor = AttributionMonitor(num_probes=8, methods=("integrated_gradients",), ig_steps="auto")  # type: ignore[arg-type]
    trainer = L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_epochs=2))
    trainer.fit(TinyCNN(), train, val)
    assert monitor.evaluations == 2
    for key in ("n_steps", "relative_gap", "passes_per_probe", "completeness_gap"):
        assert f"xai/integrated_gradients/{key}" in trainer.callback_metrics
    steps = float(trainer.callback_metrics["xai/integrated_gradients/n_steps"])
    assert steps in STEP_LADDER


def test_limit_batch_caps_fixed_and_measured_sizes() -> None:
    counting = Counting(_cnn())
    x, targets = _probes(8)
    fixed = IntegratedGradients(n_steps=8, internal_batch_size=64)
    fixed.limit_batch(16)
    knee = IntegratedGradients(n_steps=32)
    with training_state_guard(counting):
        fixed.explain(counting, x.clone(), targets)
        assert max(b for b, grad in counting.calls if grad) == 16
        counting.calls.clear()
        for _ in range(3):
            knee.explain(counting, x.clone(), targets)
        knee.limit_batch(8)
        counting.calls.clear()
        for _ in range(3):
            knee.explain(counting, x.clone(), targets)
    assert max(b for b, grad in counting.calls if grad) <= 8
    with pytest.raises(ValueError, match="`max_batch` must be >= 1"):
        knee.limit_batch(0)
