"""Trial A: ordinary Lightning setups a new user has, each found wrong or unclear before its fix."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, DriftPolicy, IntegratedGradients
from tests.conftest import TinyCNN, make_images, trainer_kwargs


def _monitor() -> AttributionMonitor:
    return AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(warmup_epochs=0)
    )


def _fit(tmp_path: Any, model: L.LightningModule, train: Any, val: Any, monitor: AttributionMonitor) -> list[str]:
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, train, val)
    return [str(w.message) for w in caught if "AttributionMonitor" in str(w.message)]


# ------------------------------------------------------------------------- dataclass batches (Lightning moves them)


@dataclass
class ImageBatch:
    image: Tensor
    label: Tensor


def _collate_dataclass(items: list[tuple[Tensor, Tensor]]) -> ImageBatch:
    return ImageBatch(torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]))


class DataclassModel(TinyCNN):
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return super().training_step((batch.image, batch.label), batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        super().validation_step((batch.image, batch.label), batch_idx)


def test_dataclass_batches_give_labelled_probes(tmp_path: Any) -> None:
    """Lightning moves dataclass batches to the device like dicts; the monitor refused them before training."""
    x, y = make_images(48)
    train = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=8, collate_fn=_collate_dataclass)
    val = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=8, collate_fn=_collate_dataclass)
    monitor = _monitor()
    _fit(tmp_path, DataclassModel(), train, val, monitor)
    assert monitor.evaluations == 1 and not monitor.history[0].errors
    assert monitor.probes is not None and monitor.probes.labels is not None
    assert sorted(monitor.probes.labels.tolist()) == [0, 1, 2, 3]
    assert all(any(torch.equal(p, v) for v in x[32:]) for p in monitor.probes.images)
