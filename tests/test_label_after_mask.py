"""The label after a per-pixel item: ``(image, mask, index)`` and ``(image, mask, weight)`` batches."""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai import AttributionMonitor, DriftPolicy
from tests.conftest import TinyCNN, make_images, trainer_kwargs


class MaskAndIndex(Dataset):
    """Segmentation-style items with the item's index for bookkeeping: (image, mask, index); no class label."""

    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.x[i], self.x[i, 0] > 0.5, i


class IgnoresTheRest(TinyCNN):
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self(batch[0]).logsumexp(dim=1).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.training_step(batch, batch_idx))


def test_an_index_after_a_mask_is_read_as_the_label_and_said(tmp_path: Any) -> None:
    """``(image, mask, label)`` and ``(image, mask, index)`` cannot be told apart by shape: the item after a mask is
    read as the label (before 38ad58d the mask was, so such probes were unlabeled). What is read is said once, with
    the fix for an index or a weight, instead of silently explaining class 0, 1, 2, 3 of items 0, 1, 2, 3."""
    x, _ = make_images(48)
    loader = DataLoader(MaskAndIndex(x), batch_size=8)
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(IgnoresTheRest(), loader, loader)
    said = [str(w.message) for w in caught if "second item is per pixel" in str(w.message)]
    assert len(said) == 1 and "labels are item 2" in said[0] and "`target='predicted'`" in said[0], said
    assert monitor.evaluations == 1 and monitor.probes is not None and monitor.probes.labels is not None


def test_the_plain_layouts_say_nothing_of_where_the_label_is() -> None:
    """``(image, label)``, ``(image, label, index)`` and ``(image, mask)`` read as before, with nothing said."""
    from lightning_xai.probes.layout import _label_at

    def label_past_a_mask(item: Any) -> int | None:  # the label's position when it is not the second item
        at = _label_at(item)
        return None if at == 1 else at

    x, y, mask = make_images(4)[0], torch.arange(4), torch.zeros(4, 16, 16, dtype=torch.bool)
    assert [label_past_a_mask(b) for b in ((x, y), (x, y, y), (x, mask), x)] == [None, None, None, None]
    assert label_past_a_mask((x, mask, y)) == 2
