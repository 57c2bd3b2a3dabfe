"""The monitor's performance knobs, tested for behaviour (never for speed): the automatic IG step count, the time
budget ``max_seconds_per_epoch`` shared by the methods, and the cap of IG's batch at the training batch size."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from torch import Tensor

from lightning_xai import AttributionMonitor, Budget, IntegratedGradients


class SlowCNN(TinyCNN):
    """TinyCNN whose gradient passes sleep per sample, so that a budget has to cut the work."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad and not self.training:
            time.sleep(0.0005 * x.shape[0])
        return super().forward(x)


def _fit(tmp_path: Any, monitor: AttributionMonitor, model: L.LightningModule | None = None, epochs: int = 2) -> Any:
    train, val = loaders()
    trainer = L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_epochs=epochs))
    trainer.fit(model or TinyCNN(), train, val)
    return trainer


def test_auto_steps_pass_through_the_monitor(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=8, methods=("gradcam", IntegratedGradients(n_steps="auto")))
    _fit(tmp_path, monitor)
    ig = next(e for e in monitor.explainers if isinstance(e, IntegratedGradients))
    assert ig.auto
    scalars = monitor.history[-1].scalars  # (logged to the loggers directly, not through pl_module.log)
    assert scalars["xai/integrated_gradients/n_steps"] == ig.current_steps
    assert scalars["xai/integrated_gradients/relative_gap"] <= ig.tolerance


def test_time_budget_cuts_ig_steps_and_logs_it(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=8, methods=(IntegratedGradients(n_steps=64),), budget=Budget(max_seconds_per_epoch=0.05)
    )
    _fit(tmp_path, monitor, SlowCNN())  # 8 probes x 64 steps x 0.5 ms >= 0.25 s > 0.05 s
    scalars = monitor.history[-1].scalars
    assert scalars["xai/integrated_gradients/budget_limited"] == 1.0
    assert 1 <= scalars["xai/integrated_gradients/n_steps"] < 64
    assert monitor.evaluations == 2
    for entry in monitor.history:  # a cut map is shown but never compared: no drift, no reference from it
        assert [e for e in entry.errors if "cut its work" in e] == [entry.errors[0]]
        assert not any("/drift/" in key for key in entry.scalars)
    assert monitor.drift_tracker.reference == {} and monitor.alerts == []


def test_spent_budget_skips_the_remaining_methods_and_says_so(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=8, methods=("gradcam", IntegratedGradients(n_steps=4)), budget=Budget(max_seconds_per_epoch=1e-9)
    )
    with pytest.warns(UserWarning, match="max_seconds_per_epoch"):
        _fit(tmp_path, monitor, epochs=1)
    errors = monitor.history[-1].errors
    assert any("max_seconds_per_epoch" in e for e in errors)


def test_bad_budget_is_named() -> None:
    with pytest.raises(ValueError, match=r"`Budget\(max_seconds_per_epoch=\.\.\.\)` must be .*> 0"):
        AttributionMonitor(budget=Budget(max_seconds_per_epoch=0))


class PassRecorder(TinyCNN):
    """TinyCNN that records the batch size of every gradient pass the monitor runs (eval mode, input grads)."""

    def __init__(self) -> None:
        super().__init__()
        self.passes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad and not self.training:
            self.passes.append(int(x.shape[0]))
        return super().forward(x)


def test_ig_batch_is_capped_at_the_training_batch_size(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=8, methods=(IntegratedGradients(n_steps=32),))
    model = PassRecorder()
    _fit(tmp_path, monitor, model)  # conftest loaders: training batch 16
    assert monitor.cost.limits()["integrated_gradients"]["max_batch"] == 16
    assert model.passes and max(model.passes) == 16  # the knee ramp (8, 16, ...) stops at the cap
    train, val = loaders()  # a second fit with a smaller training batch: the cap follows it
    smaller = torch.utils.data.DataLoader(train.dataset, batch_size=4)
    model.passes.clear()
    L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path / "again", max_epochs=1)).fit(model, smaller, val)
    assert monitor.cost.limits()["integrated_gradients"]["max_batch"] == 4
    assert model.passes and max(model.passes) == 4
    explicit = AttributionMonitor(num_probes=8, methods=(IntegratedGradients(internal_batch_size=64),))
    _fit(tmp_path / "b", explicit, epochs=1)
    assert "max_batch" not in explicit.cost.limits()["integrated_gradients"]  # an explicit batch size is left alone


def test_budget_is_shared_in_method_order(tmp_path: Any) -> None:
    """Grad-CAM runs first and IG gets only what is left: with a slow Grad-CAM eating most of the budget, IG's
    steps are cut harder than with IG alone under the same budget."""
    from lightning_xai import GradCam

    class SlowGradCam(GradCam):
        def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Any:
            time.sleep(0.15)
            return super().explain(forward, inputs, targets)

    alone = AttributionMonitor(
        num_probes=8, methods=(IntegratedGradients(n_steps=64),), budget=Budget(max_seconds_per_epoch=0.2)
    )
    _fit(tmp_path / "alone", alone, SlowCNN(), epochs=1)
    shared = AttributionMonitor(
        num_probes=8, methods=(SlowGradCam(), IntegratedGradients(64)), budget=Budget(max_seconds_per_epoch=0.2)
    )
    _fit(tmp_path / "shared", shared, SlowCNN(), epochs=1)
    steps_alone = alone.history[-1].scalars["xai/integrated_gradients/n_steps"]
    steps_shared = shared.history[-1].scalars["xai/integrated_gradients/n_steps"]
    assert shared.history[-1].scalars["xai/integrated_gradients/budget_limited"] == 1.0
    assert not any("skipped" in e for e in shared.history[-1].errors)  # both methods ran
    assert 1 <= steps_shared < steps_alone < 64


def test_no_budget_logs_no_budget_key(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=(IntegratedGradients(n_steps=4),))
    _fit(tmp_path, monitor, epochs=1)
    assert "xai/integrated_gradients/budget_limited" not in monitor.history[-1].scalars
    assert monitor.history[-1].scalars["xai/integrated_gradients/n_steps"] == 4


def test_training_batch_size_reads_every_loader_shape() -> None:
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

    from lightning_xai._trainer import training_batch_size

    data = list(range(10))
    assert training_batch_size(DataLoader(data, batch_size=5)) == 5
    assert training_batch_size([DataLoader(data, batch_size=3), DataLoader(data, batch_size=7)]) == 7
    assert training_batch_size({"a": DataLoader(data, batch_size=2)}) == 2
    sampler = BatchSampler(SequentialSampler(data), batch_size=6, drop_last=False)
    assert training_batch_size(DataLoader(data, batch_sampler=sampler)) == 6
    assert training_batch_size(DataLoader(data, batch_size=None)) is None
    assert training_batch_size(None) is None and training_batch_size(iter(data)) is None


def test_validate_alone_leaves_ig_uncapped(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=(IntegratedGradients(n_steps=4),))
    _, val = loaders()
    trainer = L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_epochs=1))
    trainer.validate(TinyCNN(), val)
    assert "max_batch" not in monitor.cost.limits()["integrated_gradients"] and monitor.evaluations == 1


def test_budget_and_keyword_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"`Budget\(max_seconds_per_epoch=\.\.\.\)` must be .*> 0"):
        AttributionMonitor(budget=Budget(max_seconds_per_epoch=True))

    class Typo(IntegratedGradients):
        explain_keywords = frozenset({"max_second"})

    with pytest.raises(ValueError, match=r"lists \['max_second'\]; the monitor offers only"):
        AttributionMonitor(methods=(Typo(4),))


def test_ig_has_one_time_budget_the_call_s() -> None:
    model = SlowCNN()
    model.eval()
    images = torch.rand(8, 1, 16, 16)
    with pytest.raises(TypeError, match="max_seconds"):
        IntegratedGradients(64, max_seconds=0.02)  # type: ignore[call-arg]
    ig = IntegratedGradients(64)
    out = ig.explain(model, images, torch.zeros(8, dtype=torch.long), max_seconds=0.02)
    assert float(out.diagnostics["budget_limited"][0]) == 1.0 and ig.last_info["n_steps"] < 64


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_the_writer_thread_yields_to_training_and_leaves_the_rest_of_the_process_alone() -> None:
    import os
    import threading

    from lightning_xai.visualize.writer import NICENESS, BackgroundWriter

    seen: list[tuple[int, int]] = []
    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    threads_before = torch.get_num_threads()
    writer = BackgroundWriter()
    writer.submit(lambda: seen.append((os.getpriority(os.PRIO_PROCESS, 0), torch.get_num_threads())))
    writer.close()
    assert seen == [(min(19, main_before + NICENESS), threads_before)]  # lower priority, torch's threads untouched
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before  # only that thread
