"""The monitor's performance knobs, tested for behaviour (never for speed).

``ig_steps="auto"`` passes through the monitor today. The time budget (``max_seconds_per_epoch``) and the cap of
Integrated Gradients' batch at the training batch size need the monitor patch described in
``docs/performance.md``; their tests skip until the monitor has ``max_seconds_per_epoch``.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from torch import Tensor

from lightning_xai import AttributionMonitor, IntegratedGradients

HAS_BUDGET = "max_seconds_per_epoch" in inspect.signature(AttributionMonitor.__init__).parameters
needs_patch = pytest.mark.skipif(not HAS_BUDGET, reason="monitor without max_seconds_per_epoch (patch pending)")


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
    monitor = AttributionMonitor(num_probes=8, ig_steps="auto")  # type: ignore[arg-type]
    trainer = _fit(tmp_path, monitor)
    ig = next(e for e in monitor.explainers if isinstance(e, IntegratedGradients))
    assert ig.auto
    assert float(trainer.callback_metrics["xai/integrated_gradients/n_steps"]) == ig.current_steps
    assert float(trainer.callback_metrics["xai/integrated_gradients/relative_gap"]) <= ig.tolerance


@needs_patch
def test_time_budget_cuts_ig_steps_and_logs_it(tmp_path: Any) -> None:
    monitor = AttributionMonitor(  # type: ignore[call-arg]
        num_probes=8, methods=("integrated_gradients",), ig_steps=64, max_seconds_per_epoch=0.05
    )
    trainer = _fit(tmp_path, monitor, SlowCNN())  # 8 probes x 64 steps x 0.5 ms >= 0.25 s > 0.05 s
    assert float(trainer.callback_metrics["xai/integrated_gradients/budget_limited"]) == 1.0
    assert 1 <= float(trainer.callback_metrics["xai/integrated_gradients/n_steps"]) < 64
    assert monitor.evaluations == 2 and not any(h["errors"] for h in monitor.history)


@needs_patch
def test_spent_budget_skips_the_remaining_methods_and_says_so(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=8, ig_steps=4, max_seconds_per_epoch=1e-9)  # type: ignore[call-arg]
    with pytest.warns(UserWarning, match="max_seconds_per_epoch"):
        _fit(tmp_path, monitor, epochs=1)
    errors = monitor.history[-1]["errors"]
    assert any("max_seconds_per_epoch" in e for e in errors)


@needs_patch
def test_bad_budget_is_named() -> None:
    with pytest.raises(ValueError, match="`max_seconds_per_epoch` must be > 0"):
        AttributionMonitor(max_seconds_per_epoch=0)  # type: ignore[call-arg]


@needs_patch
def test_ig_batch_is_capped_at_the_training_batch_size(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=8, methods=("integrated_gradients",), ig_steps=32)
    _fit(tmp_path, monitor)  # conftest loaders: training batch 16
    ig = next(e for e in monitor.explainers if isinstance(e, IntegratedGradients))
    assert ig.max_batch == 16
    assert ig.batcher.chosen is None or ig.batcher.chosen <= 16
    explicit = AttributionMonitor(num_probes=8, methods=("integrated_gradients",), ig_internal_batch_size=64)
    _fit(tmp_path / "b", explicit, epochs=1)
    ig = next(e for e in explicit.explainers if isinstance(e, IntegratedGradients))
    assert ig.max_batch is None  # an explicit batch size is left alone
