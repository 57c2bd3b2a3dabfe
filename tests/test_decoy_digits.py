"""Tests for the Decoy-digits shortcut scenario (examples.shortcut.decoy_digits)."""

from __future__ import annotations

import ast
import pickle
import random
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from examples.shortcut import (
    DecoyDigits,
    DecoySpec,
    DecoySwitch,
    decoy_for_labels,
    decoy_masks,
    label_for_decoy,
    load_digits_tensors,
    mismatched_decoy_images,
    random_decoy,
    stamp_decoy,
)
from examples.shortcut import decoy_digits as dd

SPEC = DecoySpec()


NO_MODULE: Any = None  # DecoySwitch never looks at the LightningModule


def fake_trainer(epoch: int, loader: Any = None) -> Any:
    """The two attributes of a Trainer that DecoySwitch reads."""
    return SimpleNamespace(current_epoch=epoch, train_dataloader=loader)


@pytest.fixture(scope="module")
def train() -> DecoyDigits:
    return DecoyDigits("train", seed=0)


@pytest.fixture(scope="module")
def val() -> DecoyDigits:
    return DecoyDigits("val", seed=0)


def majority_vote_accuracy(labels: Tensor, corners: Tensor, levels: Tensor) -> float:
    """Best accuracy of predicting the label from the (corner, level) pair alone."""
    code = label_for_decoy(corners, levels)
    correct = sum(int(torch.bincount(labels[code == c], minlength=10).max()) for c in code.unique())
    return correct / labels.numel()


def decoy_matches_label(images: Tensor, labels: Tensor, spec: DecoySpec = SPEC) -> Tensor:
    """Per image: does the patch of the label's predictive code hold exactly the label's intensity?"""
    corners, levels = decoy_for_labels(labels, spec)
    masks = decoy_masks(corners, spec).unsqueeze(1)
    expected = torch.tensor(spec.levels)[levels].view(-1, 1, 1, 1)
    return ((images == expected) | ~masks).flatten(1).all(1)


# ------------------------------------------------------------------------------------- shapes & determinism


def test_load_digits_tensors_shapes_range_determinism() -> None:
    images, labels = load_digits_tensors(32, seed=0)
    assert images.shape == (1797, 1, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert torch.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    again_images, again_labels = load_digits_tensors(32, seed=0)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    other_images, other_labels = load_digits_tensors(32, seed=1)
    assert not torch.equal(labels, other_labels)  # another order ...
    assert torch.equal(torch.bincount(other_labels), torch.bincount(labels))  # ... of the same digits
    small, _ = load_digits_tensors(8, seed=0)
    assert small.shape == (1797, 1, 8, 8)
    # the 8x8 values are the sklearn pixels / 16
    assert torch.equal(small * 16, (small * 16).round())


def test_dataset_items_shapes_and_range(train: DecoyDigits, val: DecoyDigits) -> None:
    assert len(train) + len(val) == 1797
    image, label = train[3]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert label.dtype == torch.int64 and label.dim() == 0
    x, y = next(iter(DataLoader(val, batch_size=16)))
    assert x.shape == (16, 1, 32, 32) and y.dtype == torch.int64
    for ds in (train, val):
        assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
        assert ds.masks.shape == (len(ds), 32, 32) and ds.masks.dtype == torch.bool
        assert ds.corners.dtype == torch.int64 and ds.levels.dtype == torch.int64
        assert int(ds.masks.flatten(1).sum(1).min()) == int(ds.masks.flatten(1).sum(1).max()) == 16
        # every image carries its decoy: patch cells hold the level's intensity
        values = torch.tensor(SPEC.levels)[ds.levels]
        patch = ds.images[:, 0][ds.masks].view(len(ds), 16)
        assert torch.equal(patch, values.unsqueeze(1).expand(-1, 16))
        # outside the patch the clean digit is untouched
        outside = ~ds.masks.unsqueeze(1)
        assert torch.equal(ds.images[outside], ds.clean_images[ds.content_indices][outside])


def test_determinism_same_seed_identical_different_seed_different() -> None:
    a, b = DecoyDigits("train", seed=5), DecoyDigits("train", seed=5)
    for name in ("images", "labels", "corners", "levels", "masks", "indices"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = DecoyDigits("train", seed=6)
    assert not torch.equal(a.indices, c.indices)
    # decoys of the same digits differ between seeds
    common, ia, ic = np.intersect1d(a.indices.numpy(), c.indices.numpy(), return_indices=True)
    assert len(common) > 500
    assert (a.corners[ia] != c.corners[ic]).float().mean() > 0.5
    va, vb = DecoyDigits("val", seed=5), DecoyDigits("val", seed=5)
    assert torch.equal(va.images, vb.images) and torch.equal(va.corners, vb.corners)


def test_split_disjoint_complete_and_stratified(train: DecoyDigits, val: DecoyDigits) -> None:
    tr, va = set(train.indices.tolist()), set(val.indices.tolist())
    assert not tr & va
    assert tr | va == set(range(1797))
    _, all_labels = load_digits_tensors(32, seed=0)
    assert torch.equal(train.labels, all_labels[train.indices])
    per_class = torch.bincount(all_labels)
    val_per_class = torch.bincount(val.labels, minlength=10)
    assert torch.all((val_per_class - 0.25 * per_class).abs() <= 0.5 + 1e-9)
    other = DecoyDigits("val", seed=0, val_fraction=0.5)
    assert abs(len(other) - 1797 / 2) <= 10
    assert not torch.equal(DecoyDigits("val", seed=1).indices, val.indices)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        DecoyDigits("test")
    with pytest.raises(ValueError):
        DecoyDigits("val", predictive=True)
    with pytest.raises(ValueError):
        DecoyDigits("val", content_noise=0.1)
    with pytest.raises(ValueError):
        DecoyDigits("train", val_fraction=1.0)
    with pytest.raises(ValueError):
        DecoyDigits("val").set_predictive(True)
    with pytest.raises(ValueError):
        DecoySpec(size=8, patch=4, margin=1)  # corners would overlap
    with pytest.raises(ValueError):
        DecoySpec(levels=(0.0, 0.5))
    with pytest.raises(ValueError):
        decoy_for_labels(torch.arange(10), DecoySpec(levels=(0.5, 1.0)))  # 8 codes < 10 classes


# ------------------------------------------------------------------------------- label information of decoys


def test_uncorrelated_decoy_carries_no_label_information(train: DecoyDigits) -> None:
    assert not train.predictive
    assert majority_vote_accuracy(train.labels, train.corners, train.levels) < 0.2
    # all twelve codes are used, roughly uniformly
    counts = torch.bincount(label_for_decoy(train.corners, train.levels), minlength=12)
    assert counts.numel() == 12 and int(counts.min()) > 0.6 * len(train) / 12


def test_set_predictive_encodes_label_and_is_reversible() -> None:
    ds = DecoyDigits("train", seed=3)
    initial = ds.images.clone()
    ds.set_predictive(True)
    assert ds.predictive
    assert majority_vote_accuracy(ds.labels, ds.corners, ds.levels) == 1.0
    assert torch.equal(label_for_decoy(ds.corners, ds.levels), ds.labels)
    assert bool(decoy_matches_label(ds.images, ds.labels).all())
    assert torch.equal(ds.content_labels, ds.labels)
    ds.set_predictive(False)
    assert torch.equal(ds.images, initial)
    ds.set_predictive(False, epoch_seed=1)
    assert not torch.equal(ds.corners, DecoyDigits("train", seed=3).corners)
    assert DecoyDigits("train", seed=3, predictive=True).predictive


def test_content_noise_replaces_thirty_percent_with_other_classes() -> None:
    ds = DecoyDigits("train", seed=0)
    ds.set_predictive(True, content_noise=0.3)
    replaced = ds.content_labels != ds.labels
    assert abs(float(replaced.float().mean()) - 0.3) <= 0.05
    assert torch.equal(replaced, ds.content_indices != torch.arange(len(ds)))
    # the decoy still spells the label for every image
    assert torch.equal(label_for_decoy(ds.corners, ds.levels), ds.labels)
    assert bool(decoy_matches_label(ds.images, ds.labels).all())
    # replaced images really show the other digit (outside the patch)
    outside = ~ds.masks.unsqueeze(1)
    source = ds.clean_images[ds.content_indices]
    assert torch.equal(ds.images[outside], source[outside])
    assert not torch.equal(source[replaced], ds.clean_images[replaced])
    # replacement classes are spread over the other classes, not just a neighbour
    assert len(set(ds.content_labels[replaced].tolist())) == 10
    # deterministic; None keeps the current noise; another epoch_seed picks other images
    again = DecoyDigits("train", seed=0, predictive=True, content_noise=0.3)
    assert torch.equal(again.images, ds.images)
    ds.set_predictive(True, epoch_seed=0)
    assert ds.content_noise == 0.3 and torch.equal(again.content_indices, ds.content_indices)
    ds.set_predictive(True, epoch_seed=7)
    assert not torch.equal(again.content_indices, ds.content_indices)


def test_validation_split_never_changes(val: DecoyDigits) -> None:
    assert not val.predictive
    assert majority_vote_accuracy(val.labels, val.corners, val.levels) < 0.3
    assert torch.equal(val.content_labels, val.labels)
    train = DecoyDigits("train", seed=0)
    train.set_predictive(True, content_noise=0.5)
    assert torch.equal(DecoyDigits("val", seed=0).images, val.images)


# --------------------------------------------------------------------------------------- stamping primitives


def test_decoy_masks_exact_cells_per_corner() -> None:
    spec = DecoySpec(size=8, patch=2, margin=1)
    masks = decoy_masks(torch.arange(4), spec)
    expected_origins = [(1, 1), (1, 5), (5, 1), (5, 5)]
    for corner, (r, c) in enumerate(expected_origins):
        want = torch.zeros(8, 8, dtype=torch.bool)
        want[r : r + 2, c : c + 2] = True
        assert torch.equal(masks[corner], want), corner
        assert spec.corner_origin(corner) == (r, c)
    zero_margin = decoy_masks(torch.tensor([1]), DecoySpec(size=6, patch=3, margin=0))[0]
    assert zero_margin[:3, 3:].all() and int(zero_margin.sum()) == 9


def test_stamp_decoy_exact_pixels_overwrite_and_no_mutation() -> None:
    spec = DecoySpec(size=8, patch=2, margin=1, levels=(0.25, 0.5, 1.0))
    images = torch.full((4, 1, 8, 8), 0.9)
    before = images.clone()
    out = stamp_decoy(images, torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 0]), spec)
    assert torch.equal(images, before)  # input untouched
    expected = before.clone()
    expected[0, 0, 1:3, 1:3] = 0.25  # top-left, level 0 (overwrites the brighter background)
    expected[1, 0, 1:3, 5:7] = 0.5  # top-right, level 1
    expected[2, 0, 5:7, 1:3] = 1.0  # bottom-left, level 2
    expected[3, 0, 5:7, 5:7] = 0.25  # bottom-right, level 0
    assert torch.equal(out, expected)
    # channel-less input and multi-channel input
    out3 = stamp_decoy(torch.zeros(1, 8, 8), torch.tensor([3]), torch.tensor([2]), spec)
    assert out3.shape == (1, 8, 8) and float(out3.sum()) == 4.0 and torch.all(out3[0, 5:7, 5:7] == 1.0)
    rgb = stamp_decoy(torch.zeros(1, 3, 8, 8), torch.tensor([0]), torch.tensor([1]), spec)
    assert torch.all(rgb[0, :, 1:3, 1:3] == 0.5) and float(rgb.sum()) == 3 * 4 * 0.5
    with pytest.raises(ValueError):
        stamp_decoy(torch.zeros(1, 1, 9, 9), torch.tensor([0]), torch.tensor([0]), spec)
    with pytest.raises(ValueError):
        stamp_decoy(torch.zeros(1, 1, 8, 8), torch.tensor([4]), torch.tensor([0]), spec)
    with pytest.raises(ValueError):
        stamp_decoy(torch.zeros(1, 1, 8, 8), torch.tensor([0]), torch.tensor([3]), spec)


def test_label_decoy_mapping_and_random_decoy() -> None:
    corners, levels = decoy_for_labels(torch.arange(10), SPEC)
    assert corners.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert levels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert len(set(zip(corners.tolist(), levels.tolist(), strict=True))) == 10  # one code per class
    assert torch.equal(label_for_decoy(corners, levels), torch.arange(10))
    rc, rl = random_decoy(3000, SPEC, torch.Generator().manual_seed(0))
    assert rc.dtype == rl.dtype == torch.int64
    assert set(rc.tolist()) == {0, 1, 2, 3} and set(rl.tolist()) == {0, 1, 2}
    rc2, rl2 = random_decoy(3000, SPEC, torch.Generator().manual_seed(0))
    assert torch.equal(rc, rc2) and torch.equal(rl, rl2)


def test_mismatched_decoy_images(val: DecoyDigits) -> None:
    generator = torch.Generator().manual_seed(1)
    images, decoy_cls = mismatched_decoy_images(val.images, val.labels, SPEC, generator)
    assert images.shape == val.images.shape and decoy_cls.dtype == torch.int64
    assert bool((decoy_cls != val.labels).all())
    assert len(set(decoy_cls.tolist())) == 10
    assert bool(decoy_matches_label(images, decoy_cls).all())  # the wrong class's code is painted
    # the old (uncorrelated) decoy is cleared: exactly one patch of 16 cells is non-zero among the 4 corners
    corner_cells = decoy_masks(torch.arange(4), SPEC).any(0)
    assert torch.all((images[:, 0, corner_cells] > 0).sum(1) == 16)
    generator = torch.Generator().manual_seed(1)
    again, again_cls = mismatched_decoy_images(val.images, val.labels, SPEC, generator)
    assert torch.equal(again, images) and torch.equal(again_cls, decoy_cls)


# ------------------------------------------------------------------------------------------ RNG & packaging


def test_global_rng_untouched() -> None:
    torch_state = torch.get_rng_state()
    np_state = pickle.dumps(np.random.get_state())
    py_state = random.getstate()
    ds = DecoyDigits("train", seed=11, content_noise=0.2)
    ds.set_predictive(True, content_noise=0.4, epoch_seed=3)
    ds.set_predictive(False)
    DecoyDigits("val", seed=11)
    load_digits_tensors(16, seed=2)
    mismatched_decoy_images(ds.images[:8], ds.labels[:8], SPEC, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert pickle.dumps(np.random.get_state()) == np_state
    assert random.getstate() == py_state


def test_core_package_never_imports_datasets() -> None:
    root = Path(dd.__file__).resolve().parents[1]
    offenders = []
    for path in root.rglob("*.py"):
        if "datasets" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [alias.name for alias in node.names]
            ours = [n for n in names if "sklearn" not in n and "torchvision" not in n]
            if any("datasets" in name for name in ours):
                offenders.append(str(path))
    assert not offenders


def test_missing_sklearn_raises_helpful_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    dd._raw_digits.cache_clear()
    dd._upscaled.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    try:
        with pytest.raises(ImportError, match=r"pip install 'lightning_xai\[examples\]'"):
            load_digits_tensors(32)
    finally:
        dd._raw_digits.cache_clear()
        dd._upscaled.cache_clear()


# ------------------------------------------------------------------------------------------------ callback


class _TinyCNN(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Recorder(Callback):
    """Records, per epoch, the dataset flag at epoch start and the decoy/label agreement of every batch."""

    def __init__(self, dataset: DecoyDigits) -> None:
        self.dataset = dataset
        self.flags: dict[int, bool] = {}
        self.matches: dict[int, list[float]] = {}

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.flags[trainer.current_epoch] = self.dataset.predictive

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, idx: int) -> None:
        x, y = batch
        share = float(decoy_matches_label(x, y).float().mean())
        self.matches.setdefault(trainer.current_epoch, []).append(share)


def _fit(ds: DecoyDigits, switch: DecoySwitch, max_epochs: int, **kwargs: Any) -> tuple[_Recorder, Trainer]:
    recorder = _Recorder(ds)
    trainer = Trainer(
        max_epochs=max_epochs,
        limit_train_batches=3,
        accelerator="cpu",
        devices=1,
        callbacks=[switch, recorder],
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    trainer.fit(_TinyCNN(), loader, **kwargs)
    return recorder, trainer


def _check_epochs(recorder: _Recorder, onset: int, epochs: list[int]) -> None:
    assert recorder.flags == {epoch: epoch >= onset for epoch in epochs}
    assert list(recorder.matches) == epochs
    for epoch, matches in recorder.matches.items():
        assert len(matches) == 3
        if epoch < onset:  # decoy ~ independent of the label (chance 1/12)
            assert max(matches) < 0.3
        else:  # every batch of the epoch, the first one included, carries the label's code
            assert all(m == 1.0 for m in matches)


@pytest.mark.parametrize("onset", [1, 0])
def test_decoy_switch_in_real_fit_finds_dataset_in_dataloader(onset: int) -> None:
    ds = DecoyDigits("train", seed=0)
    switch = DecoySwitch(onset_epoch=onset, content_noise=0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recorder, _ = _fit(ds, switch, max_epochs=onset + 2)
    assert not [w for w in caught if "DecoySwitch" in str(w.message)]
    _check_epochs(recorder, onset, list(range(onset + 2)))
    assert switch.switched_at_epoch == onset and ds.content_noise == 0.3
    assert switch.state_dict()["switched_at_epoch"] == onset


def test_decoy_switch_explicit_dataset_fit_and_resume(tmp_path: Path) -> None:
    ds = DecoyDigits("train", seed=0)
    recorder, trainer = _fit(ds, DecoySwitch(onset_epoch=1, dataset=ds, content_noise=0.3), max_epochs=2)
    _check_epochs(recorder, 1, [0, 1])
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    fresh = DecoyDigits("train", seed=0)  # a new process would rebuild the dataset uncorrelated
    switch = DecoySwitch(onset_epoch=1, dataset=fresh, content_noise=0.3)
    recorder, _ = _fit(fresh, switch, max_epochs=3, ckpt_path=str(ckpt))
    _check_epochs(recorder, 1, [2])
    assert torch.equal(fresh.images, ds.images) and switch.switched_at_epoch == 1


def test_decoy_switch_state_and_hooks_without_trainer() -> None:
    ds = DecoyDigits("train", seed=2)
    switch = DecoySwitch(onset_epoch=2, dataset=ds)
    loader = DataLoader(ds, batch_size=8)
    for epoch in range(2):
        switch.on_train_epoch_start(fake_trainer(epoch, loader), NO_MODULE)
        assert not ds.predictive and not switch.switched
    switch.on_train_epoch_start(fake_trainer(2, loader), NO_MODULE)
    assert ds.predictive and switch.state_dict()["switched_at_epoch"] == 2
    fresh = DecoyDigits("train", seed=2)
    restored = DecoySwitch(onset_epoch=2, dataset=fresh)
    restored.load_state_dict(switch.state_dict())
    restored.on_fit_start(fake_trainer(0), NO_MODULE)
    assert fresh.predictive and torch.equal(fresh.images, ds.images)
    with pytest.raises(RuntimeError):
        DecoySwitch(onset_epoch=0).on_train_epoch_start(
            fake_trainer(0, DataLoader(TensorDataset(torch.zeros(4)))), NO_MODULE
        )
    with pytest.raises(ValueError):
        DecoySwitch(dataset=DecoyDigits("val"))


def test_decoy_switch_warns_when_workers_may_hold_stale_data() -> None:
    ds = DecoyDigits("train", seed=0)
    loader = DataLoader(ds, batch_size=8, num_workers=1, persistent_workers=True)
    switch = DecoySwitch(onset_epoch=0)
    switch.on_fit_start(fake_trainer(0), NO_MODULE)
    with pytest.warns(UserWarning) as record:
        switch.on_train_epoch_start(fake_trainer(0, loader), NO_MODULE)
    messages = " ".join(str(w.message) for w in record)
    assert "persistent" in messages and "first epoch" in messages
    assert ds.predictive
