"""Batch and label formats of ordinary image-classification loaders: the probes and labels are what the model sees,
and what the monitor assumed is said."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from conftest import TinyCNN, make_images, trainer_kwargs
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_xai import AttributionMonitor
from lightning_xai.probes.collect import collect_probes


def _true_labels(probes: Tensor, images: Tensor, labels: Tensor) -> list[int]:
    """The labels of the images the probes are (each probe found among ``images``)."""
    found = [int((images - p).flatten(1).abs().amax(1).argmin()) for p in probes]
    return labels[found].tolist()


def test_numpy_label_arrays_from_a_collate_fn_are_the_labels() -> None:
    x, y = make_images(32)

    def collate(items: list[Any]) -> tuple[Tensor, np.ndarray]:
        return torch.stack([a for a, _ in items]), np.array([int(b) for _, b in items])

    probes = collect_probes(DataLoader(TensorDataset(x, y), batch_size=8, collate_fn=collate), 4, seed=0)
    assert probes.labels is not None, "numpy label arrays were dropped: the probes are unlabeled"
    assert probes.labels.tolist() == _true_labels(probes.images, x, y)


def test_a_shuffled_validation_loader_gives_the_same_probes_whatever_the_global_rng() -> None:
    x, y = make_images(64)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    drawn = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        drawn.append(collect_probes(loader, 4, seed=0).images)
    assert torch.equal(drawn[0], drawn[1]), "the probe draw followed the sampler's order (the global RNG)"


class _HWC(TinyCNN):
    """Channels-last uint8 batches, permuted and scaled by the model itself."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 3, 1, 2).float() / 255)


def test_channels_last_batches_are_refused_without_an_image_logger(tmp_path: Any) -> None:
    x, y = make_images(48, size=16)
    hwc = (x.permute(0, 2, 3, 1) * 255).to(torch.uint8)
    train = DataLoader(TensorDataset(hwc[:32], y[:32]), batch_size=16)
    val = DataLoader(TensorDataset(hwc[32:], y[32:]), batch_size=16)
    monitor = AttributionMonitor(num_probes=4, methods=("saliency",))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor]))
    with pytest.raises(ValueError, match="channels-last"):
        trainer.fit(_HWC(), train, val)


class _Items(Dataset):
    """Items laid out by ``layout(image, label, index)``."""

    def __init__(self, images: Tensor, labels: Tensor, layout: Any) -> None:
        self.images, self.labels, self.layout = images, labels, layout

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        return self.layout(self.images[i], int(self.labels[i]), i)


def _scrambled(n: int = 32) -> tuple[Tensor, Tensor]:
    """Images whose labels are not their positions (so an index read as the label shows)."""
    x, y = make_images(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    return x[order], y[order]


def test_metadata_before_the_label_is_skipped_and_said() -> None:
    x, y = _scrambled()
    meta = DataLoader(_Items(x, y, lambda img, lab, i: (img, {"id": i, "path": f"{i}.png"}, lab)), batch_size=8)
    probes = collect_probes(meta, 4, seed=0)
    assert probes.labels is not None, "the metadata dict was read as the label: the probes are unlabeled"
    assert probes.labels.tolist() == _true_labels(probes.images, x, y)
    assert any("second item is a dict" in w and "item 2" in w for w in probes.warnings), probes.warnings


def test_an_index_before_the_label_is_said() -> None:
    x, y = _scrambled()
    probes = collect_probes(DataLoader(_Items(x, y, lambda img, lab, i: (img, i, lab)), batch_size=8), 4, seed=0)
    said = " ".join(probes.warnings)
    assert "item 1" in said and "item 2" in said, probes.warnings  # which was read, and which could be it too


def test_a_dict_batch_without_a_label_key_says_its_keys() -> None:
    x, y = make_images(16)
    loader = DataLoader(_Items(x, y, lambda img, lab, i: {"image": img, "class_idx": lab}), batch_size=8)
    probes = collect_probes(loader, 4, seed=0)
    assert probes.labels is None
    assert "class_idx" in probes.note, probes.note


def test_nested_inputs_give_the_image_and_say_the_rest_is_not_passed() -> None:
    x, y = _scrambled()
    loader = DataLoader(_Items(x, y, lambda img, lab, i: ((img, torch.rand(3)), lab)), batch_size=8)
    probes = collect_probes(loader, 4, seed=0)
    assert probes.images.shape[1:] == x.shape[1:]
    assert probes.labels is not None and probes.labels.tolist() == _true_labels(probes.images, x, y)
    assert any("forward_fn" in w and "2 inputs" in w for w in probes.warnings), probes.warnings


def test_a_list_of_images_is_stacked_and_said() -> None:
    x, y = _scrambled()

    def collate(items: list[Any]) -> tuple[list[Tensor], Tensor]:
        return [a for a, _ in items], torch.tensor([b for _, b in items])

    probes = collect_probes(DataLoader(TensorDataset(x, y), batch_size=8, collate_fn=collate), 4, seed=0)
    assert probes.labels is not None and probes.labels.tolist() == _true_labels(probes.images, x, y)
    assert any("list" in w for w in probes.warnings), probes.warnings


def test_a_list_of_images_of_different_sizes_is_refused_by_name() -> None:
    x, y = make_images(16)
    sized = [torch.nn.functional.interpolate(img[None], size=12 + 4 * (i % 2))[0] for i, img in enumerate(x)]

    def collate(items: list[Any]) -> tuple[list[Tensor], Tensor]:
        return [a for a, _ in items], torch.tensor([b for _, b in items])

    loader = DataLoader(list(zip(sized, y.tolist(), strict=True)), batch_size=8, collate_fn=collate)
    with pytest.raises(ValueError, match=r"`probes`.*different sizes.*probes=\(images, labels\)"):
        collect_probes(loader, 4, seed=0)


def test_a_scalar_after_the_label_is_not_a_crash() -> None:
    x, y = make_images(16)

    def collate(items: list[Any]) -> tuple[Tensor, Tensor, Tensor]:  # a batch-wide weight (a temperature, a step)
        return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items]), torch.tensor(0.5)

    probes = collect_probes(DataLoader(TensorDataset(x, y), batch_size=8, collate_fn=collate), 4, seed=0)
    assert probes.labels is not None and probes.labels.tolist() == _true_labels(probes.images, x, y)


class _Signal(L.LightningModule):
    """A 6-channel signal as (N, C, T, 1), convolved along T (a sensor recording, not a channels-last image)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(6, 8, (3, 1), padding=(1, 0)), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(4)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", torch.nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_a_signal_of_width_one_is_not_refused_as_channels_last(tmp_path: Any) -> None:
    x, y = torch.randn(32, 6, 32, 1, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 4
    train, val = DataLoader(TensorDataset(x, y), batch_size=16), DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)
    monitor = AttributionMonitor(num_probes=4, methods=("saliency",))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor]))
    with pytest.warns(UserWarning, match=r"channels-last"):  # said, not refused: (N, H, W, C) would be 6x32 images
        trainer.fit(_Signal(), train, val)
    assert monitor.probes is not None and monitor.probes.images.shape[1:] == (6, 32, 1)
