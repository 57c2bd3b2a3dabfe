"""Transfer-learning and tuning recipes found in a new-user trial: frozen backbones, ``BackboneFinetuning``, the tuner,
two fits, resumes (each test: a defect it caught)."""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as L
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from lightning.pytorch.callbacks import BackboneFinetuning, ModelCheckpoint
from torch import Tensor

from lightning_xai import AttributionMonitor, DriftPolicy, ShiftDetector


class _Recording(ShiftDetector):
    """A detector that records, per call, the epoch and whether it was armed (it may calibrate and alert)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, bool]] = []

    def update(self, method: str, maps: Tensor, input_size: tuple[int, int], armed: bool, **kw: Any) -> Any:
        self.calls.append((int(kw["epoch"]), armed))
        return super().update(method, maps, input_size, armed, **kw)


class _WithBackbone(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = self.features  # what BackboneFinetuning freezes, then unfreezes

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.lr, momentum=0.9)


def test_a_resume_sees_the_backbone_unfrozen_at_its_first_epoch_as_the_uninterrupted_run_does(tmp_path: Any) -> None:
    """``BackboneFinetuning(unfreeze_backbone_at_epoch=2)`` resumed from the checkpoint of epoch 1 (a preempted job):
    the uninterrupted run pauses the detector at epoch 2, where the maps move because the backbone trains; the resumed
    run did not know the setup before the checkpoint (not saved), so it calibrated and could alert on that epoch."""

    def fit(max_epochs: int, ckpt_path: str | None = None) -> _Recording:
        L.seed_everything(0, verbose=False)
        detector = _Recording()
        monitor = AttributionMonitor(
            num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0, detector=detector)
        )
        checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, save_top_k=0)
        callbacks = [BackboneFinetuning(unfreeze_backbone_at_epoch=2, verbose=False), checkpoint, monitor]
        kw = trainer_kwargs(tmp_path, max_epochs=max_epochs, callbacks=callbacks, enable_checkpointing=True)
        L.Trainer(**kw).fit(_WithBackbone(), *loaders(), ckpt_path=ckpt_path)
        assert isinstance(monitor.detector, _Recording)
        return monitor.detector

    assert fit(3).calls == [(0, True), (1, True), (2, False)]  # uninterrupted: epoch 2 paused
    fit(2)
    assert fit(3, ckpt_path="last").calls == [(2, False)]


class _FrozenUnderNoGrad(TinyCNN):
    """The features run without gradients while ``frozen`` (the Lightning docs' transfer-learning recipe)."""

    frozen = True

    def forward(self, x: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            h = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(h))


def test_a_second_fit_that_unfreezes_the_backbone_is_explained(tmp_path: Any) -> None:
    """Phase 1 trains the head over a backbone run under ``no_grad`` (said once: no gradient method can run); phase 2
    fits the same model again with the backbone trainable. The setup check ran once per model object, so every
    evaluation of phase 2 still skipped every method ("cannot run on this model"), with nothing said."""
    L.seed_everything(0, verbose=False)
    model, (train, val) = _FrozenUnderNoGrad(), loaders()
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", "integrated_gradients"), drift=DriftPolicy(warmup_epochs=0)
    )
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor]))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        trainer.fit(model, train, val)
    assert [str(w.message) for w in said if "cannot be explained by gradient methods" in str(w.message)]
    assert len(monitor.history[0].errors) == 2
    model.frozen = False
    trainer.fit_loop.max_epochs = 2
    trainer.fit(model, train, val)
    assert [h.epoch for h in monitor.history] == [0, 1]
    assert monitor.history[1].errors == []
    assert {"xai/gradcam/drift/rank_vs_reference/median", "xai/integrated_gradients/seconds"} <= set(
        monitor.history[1].scalars
    )
