"""Batches as users build them: dataclass batches, (image, mask, label) tuples, a binary head squeezed to (N,)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

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


# ------------------------------------------------------------------------------------ (image, mask, label) batches


class WithMasks(Dataset):
    """Segmentation-style items: (image, mask, label)."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.x[i], self.x[i, 0] > 0.5, self.y[i]


class MaskModel(TinyCNN):
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return super().training_step((batch[0], batch[2]), batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        super().validation_step((batch[0], batch[2]), batch_idx)


def test_image_mask_label_batches_take_the_label_not_the_mask(tmp_path: Any) -> None:
    """The mask in second place was read as the labels: the probes became unlabeled, the predicted class was
    explained instead of the label, and the warning called the user's masks 'labels of shape (12, 12)'."""
    x, y = make_images(48)
    train = DataLoader(WithMasks(x[:32], y[:32]), batch_size=8)
    val = DataLoader(WithMasks(x[32:], y[32:]), batch_size=8)
    monitor = _monitor()
    said = _fit(tmp_path, MaskModel(), train, val, monitor)
    assert monitor.probes is not None and monitor.probes.labels is not None, said
    for image, label in zip(monitor.probes.images, monitor.probes.labels, strict=True):
        index = next(i for i, v in enumerate(x) if torch.equal(v, image))
        assert int(label) == int(y[index])
    assert not any("unlabeled" in s or "no labels" in s for s in said), said


def test_split_example_keeps_the_second_item_when_it_is_the_label() -> None:
    from lightning_xai.probes.collect import split_example

    x, y, idx = torch.rand(4, 1, 8, 8), torch.arange(4), torch.arange(10, 14)
    assert split_example((x, y, idx))[1] is y  # (image, label, index): the label is still the second item
    onehot = torch.eye(4)
    assert split_example((x, onehot, torch.rand(4, 8, 8)))[1] is onehot  # one-hot labels are labels
    masks = torch.rand(4, 8, 8) > 0.5
    assert split_example((x, masks, y))[1] is y  # batched (image, mask, label)
    one = y[0]
    assert split_example((x[0], masks[0], one))[1] is one  # one unbatched item
    assert split_example((x, masks))[1] is masks  # nothing else: as before (said as not one class each)


# --------------------------------------------------------------------------- a binary head squeezed to (N,) logits


class SqueezedBinary(TinyCNN):
    """A BCEWithLogitsLoss classifier whose forward squeezes its one logit to shape (N,)."""

    def __init__(self) -> None:
        super().__init__(num_classes=1)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).squeeze(1)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return torch.nn.functional.binary_cross_entropy_with_logits(self(x), y.float())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.training_step(batch, batch_idx))


def test_squeezed_one_logit_output_is_refused_with_the_reshape_that_fixes_it(tmp_path: Any) -> None:
    """The refusal said 'Pass `forward_fn=` to select them': there is nothing to select in (N,) logits."""
    x, y = make_images(32)
    y = y % 2
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[_monitor()]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"returns shape \(\d+,\).*module\(x\)\.unsqueeze\(1\)"):
            trainer.fit(SqueezedBinary(), loader, loader)
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=2)),
        forward_fn=_unsqueezed,
        drift=DriftPolicy(warmup_epochs=0),
    )
    _fit(tmp_path / "fixed", SqueezedBinary(), loader, loader, monitor)  # the fix the message gives works
    assert monitor.evaluations == 1 and not monitor.history[0].errors


def _unsqueezed(module: Any, x: Tensor) -> Tensor:
    return module(x).unsqueeze(1)
