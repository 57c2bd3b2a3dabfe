"""Integrated Gradients performance features, tested for behaviour (never for speed).

- the maps equal Captum's Gauss–Legendre IG called directly, whatever the batch cap (probe groups, probe slices);
- passes are batched by sizes: counted forward calls, no pass per probe, never above the cap (probes > cap too);
- ``n_steps="auto"``: fewest ladder steps meeting the tolerance, climbs when the model gets rougher, tries
  fewer steps periodically, stays within its pass cap per call, logs its diagnostics through the monitor;
- ``max_seconds``: the step count is cut to the budget, flagged, never below one step.
"""

from __future__ import annotations

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
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.integrated_gradients import DEFAULT_BATCH, STEP_LADDER, plan_batches


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


@pytest.mark.parametrize("cap", [None, 2, 5, 24, 1000], ids=lambda c: f"cap-{c}")
def test_maps_equal_captum_called_directly(cap: int | None) -> None:
    """Captum's own ``IntegratedGradients(method="gausslegendre")`` on the same inputs, a (C, H, W) baseline."""
    model = _cnn(3)
    x, targets = _probes(7, seed=4)
    baseline = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = CaptumIG(model, multiply_by_inputs=True).attribute(
        x.clone(), baselines=baseline.expand_as(x), target=targets, n_steps=12, method="gausslegendre"
    )
    ig = IntegratedGradients(n_steps=12, baseline=baseline)
    with training_state_guard(model):
        got = ig.explain(model, x.clone(), targets, max_batch=cap)
    torch.testing.assert_close(got.raw, expected.sum(dim=1))
    assert ig.last_batch_size is not None and ig.last_batch_size <= (cap or DEFAULT_BATCH)


@pytest.mark.parametrize("internal_batch_size", [None, 1, 4, 7, 12, 1000], ids=lambda b: f"batch-{b}")
def test_matches_captum_for_any_chunking(internal_batch_size: int | None) -> None:
    model = _cnn()
    x, targets = _probes()
    expected = _captum(model, x, targets, 10)
    ig = IntegratedGradients(n_steps=10, internal_batch_size=internal_batch_size)
    with training_state_guard(model):
        for _ in range(2):  # the same answer every call
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
    counting = Counting(_cnn())
    x, targets = _probes(4)
    with training_state_guard(counting):
        IntegratedGradients(n_steps=12, internal_batch_size=32).explain(counting, x.clone(), targets)
    assert [b for b, grad in counting.calls if grad] == [24, 24]  # not 32 + 16
    assert plan_batches(4, 12, 32) == [(4, 24)]


def test_below_one_group_the_probes_are_sliced_not_looped() -> None:
    counting = Counting(_cnn())
    x, targets = _probes(8)
    with training_state_guard(counting):
        IntegratedGradients(n_steps=3, internal_batch_size=4).explain(counting, x.clone(), targets)
    grad_calls = [b for b, grad in counting.calls if grad]
    assert grad_calls == [4] * 6  # 2 slices of 4 probes per step, 3 steps


def test_without_a_cap_the_default_batch_is_used() -> None:
    counting = Counting(_cnn())
    x, targets = _probes(16)
    ig = IntegratedGradients(n_steps=16)
    with training_state_guard(counting):
        ig.explain(counting, x.clone(), targets)
    grad_calls = [b for b, grad in counting.calls if grad]
    assert grad_calls == [DEFAULT_BATCH] * (16 * 16 // DEFAULT_BATCH)  # 16 probes x 4 steps per pass
    assert ig.last_batch_size == DEFAULT_BATCH


@pytest.mark.parametrize(
    ("probes", "steps", "cap"),
    [(8, 32, 64), (8, 7, 20), (6, 5, 6), (6, 5, 5), (20, 3, 8), (10, 3, 4), (13, 4, 1), (100, 2, None)],
    ids=lambda v: str(v),
)
def test_passes_never_exceed_the_cap(probes: int, steps: int, cap: int | None) -> None:
    """Counted with a forward hook on the model: every gradient pass is within the cap, the work is all done once,
    and no pass is smaller than it has to be (whole probe groups, or even probe slices when probes > cap)."""
    model = _cnn()
    sizes: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda _, args: sizes.append(args[0].shape[0]) if args[0].requires_grad else None
    )
    x, targets = _probes(probes)
    limit = cap or DEFAULT_BATCH
    try:
        with training_state_guard(model):
            out = IntegratedGradients(n_steps=steps).explain(model, x.clone(), targets, max_batch=cap)
    finally:
        hook.remove()
    assert max(sizes) <= limit
    assert sum(sizes) == probes * steps
    if probes <= limit:  # whole probe groups, the fewest passes
        assert min(sizes) >= probes
        assert len(sizes) == -(-steps // (limit // probes))
    else:  # slices of the probes, within one of each other
        slices = -(-probes // limit)
        assert min(sizes) >= probes // slices
        assert len(sizes) <= slices * steps
    assert out.raw.shape == (probes, 8, 8)


def test_max_batch_bounds_every_pass() -> None:
    counting = Counting(_cnn())
    x, targets = _probes(8)
    ig = IntegratedGradients(n_steps=32)
    with training_state_guard(counting):
        for _ in range(3):
            ig.explain(counting, x.clone(), targets, max_batch=16)
    assert max(b for b, grad in counting.calls if grad) <= 16


@pytest.mark.parametrize("gone", ["memory_budget", "max_batch", "max_seconds"])
def test_memory_budget_and_per_call_limits_are_not_constructor_arguments(gone: str) -> None:
    with pytest.raises(TypeError, match=gone):
        IntegratedGradients(n_steps=8, **{gone: 1})


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


def test_auto_first_call_doubles_to_the_tolerance_then_rechecks_bring_it_down() -> None:
    x, _ = _probes(6)
    targets = torch.zeros(6, dtype=torch.long)
    model = Rough(freq=3.0)
    ladder = [s for s in STEP_LADDER if 2 <= s <= 64]
    with training_state_guard(model):
        expected = _steps_needed(model, x, targets, 0.01, ladder)
        ig = IntegratedGradients(n_steps="auto", tolerance=0.01, recheck_every=1)
        out = ig.explain(model, x.clone(), targets)
        first = int(out.diagnostics["n_steps"][0])
        later = [int(ig.explain(model, x.clone(), targets).diagnostics["n_steps"][0]) for _ in range(6)]
    assert 4 < expected < 64  # the test model needs some, but not all, steps
    assert first in (4, 8, 16, 32, 64) and expected <= first < 2 * expected  # doubling from 4
    assert float(out.diagnostics["relative_gap"][0]) <= 0.01
    spent = float(out.diagnostics["passes_per_probe"][0])
    rejected = sum(s for s in (4, 8, 16, 32, 64) if s < first)  # tried on 2 of the 6 probes (the search's share)
    assert spent == pytest.approx(first + rejected * 2 / 6) and spent < 1.5 * first  # tries are counted
    assert ig.passes_per_probe == later[-1] + 1
    assert later[-1] == expected  # the periodic re-check descends rung by rung to the fewest that pass


def test_auto_first_call_searches_on_a_share_of_the_probes_then_runs_the_rung_found_on_the_rest() -> None:
    x = _probes(1, seed=3)[0].repeat(8, 1, 1, 1)  # alike: the share's gap is the gap of all
    targets = torch.zeros(8, dtype=torch.long)
    model = Counting(Rough(freq=10.0))  # needs 16 steps
    ig = IntegratedGradients(n_steps="auto", tolerance=0.01)
    with training_state_guard(model):
        out = ig.explain(model, x.clone(), targets)
        first = int(out.diagnostics["n_steps"][0])
        samples = sum(size for size, grad in model.calls if grad)
        fixed = IntegratedGradients(n_steps=first).explain(model.model, x.clone(), targets)
    tried = [s for s in (4, 8, 16, 32, 64) if s <= first]
    assert first > 4 and [n for n, _ in ig.last_info["tries"]] == tried + [first]  # the share's tries, the rest's
    assert samples == 2 * sum(tried) + 6 * first  # the search ran on 2 of the 8 probes only
    torch.testing.assert_close(out.raw, fixed.raw)  # the same maps as a call with that many steps
    gap, fixed_gap = (float(o.diagnostics["relative_gap"][0]) for o in (out, fixed))
    assert gap == pytest.approx(fixed_gap, abs=1e-6)


def test_auto_first_call_climbs_on_all_probes_when_the_share_passes_but_all_do_not() -> None:
    x, _ = _probes(8)
    x[[3, 6]] *= 10  # the two largest |F(x) - F(x')|: the search's share, on the linear output
    targets = torch.tensor([0, 0, 0, 1, 0, 0, 1, 0])
    model = Rough(freq=8.0)
    ig = IntegratedGradients(n_steps="auto", tolerance=1e-3)
    with training_state_guard(model):
        out = ig.explain(model, x.clone(), targets)
        fixed = IntegratedGradients(n_steps=int(out.diagnostics["n_steps"][0])).explain(model, x.clone(), targets)
    steps = [n for n, _ in ig.last_info["tries"]]
    assert steps[:2] == [4, 4]  # the share passed at 4 steps (linear: no gap), then 4 on the rest
    assert int(out.diagnostics["n_steps"][0]) > 4 and steps[2:] == [8, 16, 32, 64][: len(steps) - 2]
    assert ig.last_info["tries"][1][1] > 1e-3  # because all the probes together missed the tolerance
    torch.testing.assert_close(out.raw, fixed.raw)


def test_auto_first_call_puts_each_probes_map_in_its_place() -> None:
    x, _ = _probes(9)
    scales = torch.tensor([0.5, 0.6, 3.0, 0.7, 0.8, 0.9, 2.5, 1.0, 1.1])  # the largest |F(x) - F(x')| in the middle
    x = x * scales.view(-1, 1, 1, 1)
    targets = torch.tensor([0, 1, 1, 0, 1, 0, 1, 0, 1])
    model = Rough(freq=2.0)
    ig = IntegratedGradients(n_steps="auto", tolerance=0.05)
    with training_state_guard(model):
        out = ig.explain(model, x.clone(), targets)
        steps = int(out.diagnostics["n_steps"][0])
        fixed = IntegratedGradients(n_steps=steps).explain(model, x.clone(), targets)
    assert len(ig.last_info["tries"]) >= 2  # the share's tries, then the rest: the merge happened
    torch.testing.assert_close(out.raw, fixed.raw)  # probe by probe, the maps of a call with that many steps
    torch.testing.assert_close(out.diagnostics["completeness_gap"], fixed.diagnostics["completeness_gap"])


def test_auto_on_a_linear_model_uses_the_fewest_steps_allowed() -> None:
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x, targets = _probes(5)
    targets = targets % 4
    ig = IntegratedGradients(n_steps="auto", min_steps=2, recheck_every=1)
    with training_state_guard(lin):
        first = ig.explain(lin, x.clone(), targets)
        steps = [int(ig.explain(lin, x.clone(), targets).diagnostics["n_steps"][0]) for _ in range(3)]
    assert int(first.diagnostics["n_steps"][0]) == 4  # the first call never descends: it costs what a later one may
    assert steps[-1] == 2


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


def test_auto_search_stays_within_its_pass_cap_and_resumes_next_call() -> None:
    x, _ = _probes(4)
    targets = torch.zeros(4, dtype=torch.long)
    model = Rough(freq=40.0)
    ig = IntegratedGradients(n_steps="auto", tolerance=1e-9, max_steps=64)  # never met: the climb goes to the top
    assert ig.max_search_passes == 128
    steps, spent = [], []
    with training_state_guard(model):
        for _ in range(4):
            out = ig.explain(model, x.clone(), targets)
            steps.append(int(out.diagnostics["n_steps"][0]))
            spent.append(int(out.diagnostics["passes_per_probe"][0]))
    assert max(spent) <= 128
    assert spent[0] == 64 + (4 + 8 + 16 + 32) / 4  # doubling to the top (on 1 of the 4 probes) within the cap
    assert steps == [64, 64, 64, 64]


def test_auto_search_stops_when_its_time_is_spent_and_resumes_next_call() -> None:
    x, _ = _probes(4)
    targets = torch.zeros(4, dtype=torch.long)
    model = Rough(freq=40.0)
    ig = IntegratedGradients(n_steps="auto", tolerance=1e-9, max_steps=64)
    with training_state_guard(model):
        first = ig.explain(model, x.clone(), targets, search_seconds=0.0)  # no time for any try after the first
        second = ig.explain(model, x.clone(), targets)
    assert int(first.diagnostics["passes_per_probe"][0]) == 4 and int(first.diagnostics["n_steps"][0]) == 4
    assert "budget_limited" not in first.diagnostics  # a cut search is not a cut map: drift is still measured
    assert int(second.diagnostics["n_steps"][0]) == 64


def test_auto_respects_max_steps() -> None:
    x, _ = _probes(4)
    targets = torch.zeros(4, dtype=torch.long)
    model = Rough(freq=40.0)
    ig = IntegratedGradients(n_steps="auto", tolerance=1e-6, max_steps=12)
    with training_state_guard(model):
        first = ig.explain(model, x.clone(), targets)  # 4 + 8 passes: 12 more would equal the cap of 24
        out = ig.explain(model, x.clone(), targets)
    assert int(first.diagnostics["n_steps"][0]) == 12
    assert int(out.diagnostics["n_steps"][0]) == 12
    assert float(out.diagnostics["relative_gap"][0]) > 1e-6  # reported honestly


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_steps": "fast"}, r"`IntegratedGradients\(n_steps=\.\.\.\)` must be an int >= 1 or 'auto'"),
        ({"n_steps": 0}, r"`IntegratedGradients\(n_steps=\.\.\.\)` must be an int >= 1, got 0"),
        ({"n_steps": "auto", "tolerance": 0}, r"`IntegratedGradients\(tolerance=\.\.\.\)` must be a number > 0"),
        ({"min_steps": 8, "max_steps": 4}, r"`IntegratedGradients\(max_steps=\.\.\.\)` must be an int >= 8, got 4"),
        ({"max_steps": "64"}, r"`IntegratedGradients\(max_steps=\.\.\.\)` must be an int"),
        ({"internal_batch_size": 0}, r"`IntegratedGradients\(internal_batch_size=\.\.\.\)` must be an int >= 1"),
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
    ig = IntegratedGradients(n_steps="auto", tolerance=1e-4)
    with training_state_guard(model):
        out = ig.explain(model, x.clone(), targets, max_seconds=1e-4)
    assert int(out.diagnostics["n_steps"][0]) == 1
    assert float(out.diagnostics["budget_limited"][0]) == 1.0


def test_generous_budget_changes_nothing() -> None:
    model = _cnn()
    x, targets = _probes(4)
    ig = IntegratedGradients(n_steps=8)
    with training_state_guard(model):
        out = ig.explain(model, x.clone(), targets, max_seconds=60.0)
    assert int(out.diagnostics["n_steps"][0]) == 8
    assert float(out.diagnostics["budget_limited"][0]) == 0.0


# ------------------------------------------------------------------------------------------ in the monitor


def test_monitor_with_auto_steps_logs_the_step_count(tmp_path: Any) -> None:
    train, val = loaders()
    monitor = AttributionMonitor(num_probes=8, methods=(IntegratedGradients(n_steps="auto"),))  # type: ignore[arg-type]
    trainer = L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_epochs=2))
    trainer.fit(TinyCNN(), train, val)
    assert monitor.evaluations == 2
    scalars = monitor.history[-1].scalars  # (logged to the loggers directly, not through pl_module.log)
    for key in ("n_steps", "relative_gap", "passes_per_probe", "completeness_gap"):
        assert f"xai/integrated_gradients/{key}" in scalars
    steps = scalars["xai/integrated_gradients/n_steps"]
    assert steps in STEP_LADDER


def test_max_batch_caps_fixed_and_default_sizes() -> None:
    counting = Counting(_cnn())
    x, targets = _probes(8)
    fixed = IntegratedGradients(n_steps=8, internal_batch_size=64)
    default = IntegratedGradients(n_steps=32)
    with training_state_guard(counting):
        fixed.explain(counting, x.clone(), targets, max_batch=16)
        assert max(b for b, grad in counting.calls if grad) == 16
        counting.calls.clear()
        default.explain(counting, x.clone(), targets)
        assert max(b for b, grad in counting.calls if grad) == DEFAULT_BATCH
        counting.calls.clear()
        default.explain(counting, x.clone(), targets, max_batch=8)
        assert {b for b, grad in counting.calls if grad} == {8}
        counting.calls.clear()
        default.explain(counting, x.clone(), targets)  # a call's limit is not kept
    assert max(b for b, grad in counting.calls if grad) == DEFAULT_BATCH
    with pytest.raises(ValueError, match="`max_batch` must be an int >= 1"):
        default.explain(counting, x.clone(), targets, max_batch=0)


def test_config_names_the_steps_and_the_baseline() -> None:
    """What a checkpoint's monitor state is matched on (``Explainer.config``)."""
    assert IntegratedGradients(8).config() == {"n_steps": 8, "baseline": None}
    assert IntegratedGradients(baseline=0.5).config() == {"n_steps": "auto", "baseline": 0.5}
    zeros = torch.zeros(3, 1, 1)
    assert torch.equal(IntegratedGradients(baseline=zeros).config()["baseline"], zeros)  # digested in the state key
    key = AttributionMonitor(methods=(IntegratedGradients(baseline=zeros),)).state_key
    assert "baseline=(3, 1, 1):" in key
    assert AttributionMonitor(methods=(IntegratedGradients(baseline=torch.zeros(3, 1, 1)),)).state_key == key
    assert AttributionMonitor(methods=(IntegratedGradients(baseline=torch.ones(3, 1, 1)),)).state_key != key
