"""Probes are what the model receives (issue 20): drawn through the validation DataLoader's own batching
(``collate_fn``) and Lightning's batch transfer hooks, for map-style, iterable and list-like validation data; the
setup check runs before the first training step even when Lightning sets up the val loader later."""

from __future__ import annotations

import re
import warnings
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, SubsetRandomSampler, TensorDataset

from lightning_xai import AttributionMonitor, DriftPolicy, GradCam, IntegratedGradients
from lightning_xai.probes import collect_probes
from tests.conftest import TinyCNN, make_images, trainer_kwargs


def _uint8_data(n: int = 48) -> tuple[Tensor, Tensor]:
    x, y = make_images(n)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), y


def _scale_collate(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """A val pipeline of uint8 images whose collate_fn converts them to the floats the model receives."""
    return torch.stack([x for x, _ in items]).float() / 255, torch.stack([y for _, y in items])


def loaders_of(x: Tensor, y: Tensor) -> tuple[DataLoader, DataLoader]:
    return DataLoader(TensorDataset(x, y), batch_size=8), DataLoader(TensorDataset(x, y), batch_size=8)


def _fit(
    tmp_path: Any, monitor: AttributionMonitor, val: Any, model: L.LightningModule | None = None, **kw: Any
) -> Any:
    x, y = make_images(32, seed=1)
    train = DataLoader(TensorDataset(x, y), batch_size=16)
    model = model or TinyCNN()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=kw.pop("max_epochs", 1), callbacks=[monitor], **kw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, train, val)
    return trainer


def test_probes_go_through_the_val_loaders_collate_fn(tmp_path: Any) -> None:
    x8, y = _uint8_data()
    val = DataLoader(TensorDataset(x8, y), batch_size=16, collate_fn=_scale_collate)
    monitor = AttributionMonitor(
        num_probes=8, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(detector=None)
    )
    _fit(tmp_path, monitor, val)
    assert monitor.probes is not None and len(monitor.probes) == 8
    assert 0.0 <= float(monitor.probes.images.min()) and float(monitor.probes.images.max()) <= 1.0
    # exactly the values the model receives for those images
    received = torch.cat([b[0] for b in val])
    assert all(any(torch.equal(p, r) for r in received) for p in monitor.probes.images)
    assert not monitor.history[-1].errors


class Normalises(TinyCNN):
    """Normalises on the device, in ``on_after_batch_transfer`` (as GPU pipelines do), and converts uint8 first in
    ``on_before_batch_transfer``."""

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        return (x.float() / 255 if x.dtype == torch.uint8 else x), y

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        return (x - 0.5) / 0.25, y


def test_probes_go_through_lightnings_batch_hooks(tmp_path: Any) -> None:
    x8, y = _uint8_data()
    val = DataLoader(TensorDataset(x8, y), batch_size=16)
    monitor = AttributionMonitor(
        num_probes=8, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(detector=None)
    )
    _fit(tmp_path, monitor, val, model=Normalises())
    assert monitor.probes is not None
    expected = (x8.float() / 255 - 0.5) / 0.25
    assert all(any(torch.equal(p, e) for e in expected) for p in monitor.probes.images)
    assert float(monitor.probes.images.min()) < 0  # normalised, not the raw 0..255


def test_a_dataset_passed_as_probes_goes_through_the_batch_hooks_too(tmp_path: Any) -> None:
    """A ``Dataset`` holds data as the loaders do: its batches get the same hooks, not raw 0..255 values."""
    x8, y = _uint8_data()
    monitor = AttributionMonitor(
        probes=TensorDataset(x8, y), num_probes=8, methods=("gradcam",), drift=DriftPolicy(detector=None)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(tmp_path, monitor, DataLoader(TensorDataset(x8, y), batch_size=16), model=Normalises())
    assert monitor.probes is not None and monitor.probes.source == "dataset" and len(monitor.probes) == 8
    expected = (x8.float() / 255 - 0.5) / 0.25
    assert all(any(torch.equal(p, e) for e in expected) for p in monitor.probes.images)
    assert not [w for w in caught if "uint8" in str(w.message)]  # floats after the hooks: nothing to say
    assert not monitor.history[-1].errors


def test_a_uint8_dataset_without_hooks_is_said_with_the_dataset_fix() -> None:
    x8, y = _uint8_data(8)
    probes = collect_probes(TensorDataset(x8, y), num_probes=4, seed=0, prepare=lambda batch: batch)
    assert probes.images.dtype == torch.float32 and float(probes.images.max()) > 1.0
    (said,) = probes.warnings
    assert "after PyTorch's default collate and the batch hooks" in said and "float `probes=` tensors" in said
    assert "move that into the Dataset or `on_after_batch_transfer`" in said  # not a collate_fn it does not use


def _dict_collate(items: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    return {"image": torch.stack([x for x, _ in items]), "label": torch.stack([y for _, y in items])}


class ReadsDicts(TinyCNN):
    """Hooks written for the val loader's dict batches."""

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch["image"] * 2.0, batch["label"]


@pytest.mark.parametrize("kind", ["dataset", "loader"])
def test_probes_whose_batches_the_hooks_cannot_take_are_refused_naming_probes(tmp_path: Any, kind: str) -> None:
    x, y = make_images(32)
    val = DataLoader(TensorDataset(x, y), batch_size=8, collate_fn=_dict_collate)
    given = TensorDataset(x, y) if kind == "dataset" else DataLoader(TensorDataset(x, y), batch_size=8)
    monitor = AttributionMonitor(probes=given, num_probes=4, methods=("gradcam",))
    train = DataLoader(TensorDataset(x, y), batch_size=8, collate_fn=_dict_collate)
    model = ReadsDicts()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor]))
    what = "probe Dataset" if kind == "dataset" else "`probes=` loader"
    with warnings.catch_warnings(), pytest.raises(ValueError, match=rf"`probes`: the batch hooks .* {what}") as e:
        warnings.simplefilter("ignore")
        trainer.fit(model, train, val)
    assert "same hooks as validation batches" in str(e.value) and model.global_step == 0


def test_a_dataset_of_the_wrong_shape_is_blamed_on_the_probes(tmp_path: Any) -> None:
    x, y = make_images(32)
    monitor = AttributionMonitor(probes=TensorDataset(x.expand(-1, 3, -1, -1), y), num_probes=4, methods=("gradcam",))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor]))
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"`probes` of shape \(3, 12, 12\) .* do not fit"):
        warnings.simplefilter("ignore")
        trainer.fit(TinyCNN(), *loaders_of(x, y))


class NumpyImages(Dataset):
    """Items are numpy arrays, as many datasets return; the default DataLoader turns them into tensors."""

    def __init__(self) -> None:
        self.x, self.y = make_images(40)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.x[i].numpy(), int(self.y[i])


def test_a_dataset_of_numpy_images(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(detector=None)
    )
    _fit(tmp_path, monitor, DataLoader(NumpyImages(), batch_size=8))
    assert monitor.probes is not None and monitor.probes.labels is not None and len(monitor.probes) == 4
    assert sorted(monitor.probes.labels.tolist()) == [0, 1, 2, 3]  # class-balanced


class Stream(IterableDataset):
    """A stream that knows its length (as many do): ``dataset[i]`` is not how to read it."""

    def __len__(self) -> int:
        return 40

    def __iter__(self) -> Any:
        x, y = make_images(40, seed=3)
        yield from zip(x, y, strict=True)


def test_an_iterable_dataset(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(detector=None)
    )
    _fit(tmp_path, monitor, DataLoader(Stream(), batch_size=8))
    assert monitor.probes is not None and len(monitor.probes) == 4 and monitor.history


class Batches:
    """A val "loader" that is a plain sequence of batches (no DataLoader), as Lightning accepts any iterable."""

    def __init__(self, batches: list[tuple[Tensor, Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def test_a_plain_iterable_of_batches(tmp_path: Any) -> None:
    x, y = make_images(32, seed=4)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(detector=None)
    )
    _fit(tmp_path, monitor, Batches(batches))
    assert monitor.probes is not None and len(monitor.probes) == 4 and monitor.history
    assert all(any(torch.equal(p, e) for e in x) for p in monitor.probes.images)


def test_the_draw_stays_within_the_samplers_indices() -> None:
    """A val loader that selects its images with a sampler (a shared dataset split by indices) gives probes from
    those indices only."""
    x, y = make_images(64)
    marked = x.clone()
    marked[:, :, 0, 0] = torch.arange(64, dtype=torch.float32)[:, None]  # the index, readable from the image
    val_indices = list(range(40, 64))
    loader = DataLoader(TensorDataset(marked, y), batch_size=8, sampler=SubsetRandomSampler(val_indices))
    probes = collect_probes(loader, num_probes=8, seed=0)
    assert {int(v) for v in probes.images[:, 0, 0, 0]} <= set(val_indices)


def test_a_nan_image_in_the_pool_is_left_out_not_refused(tmp_path: Any) -> None:
    x, y = make_images(32, seed=5)
    x[3] = float("nan")
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    probes = collect_probes(loader, num_probes=8, seed=0)
    assert probes.warnings == ("1 of 32 images scanned from the validation dataloader hold NaN or Inf and are not used "
                               "as probes",)  # fmt: skip
    assert bool(torch.isfinite(probes.images).all())
    monitor = AttributionMonitor(
        num_probes=8, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(detector=None)
    )
    _fit(tmp_path, monitor, loader)  # the fit is not refused
    assert monitor.probes is not None and bool(torch.isfinite(monitor.probes.images).all()) and monitor.history


def test_integer_images_after_the_pipeline_are_said() -> None:
    x8, y = _uint8_data(32)
    probes = collect_probes(DataLoader(TensorDataset(x8, y), batch_size=8), num_probes=4, seed=0)
    assert (
        len(probes.warnings) == 1
        and "yields torch.uint8 images after its collate_fn and the batch hooks" in (probes.warnings[0])
    )
    assert probes.images.dtype == torch.float32 and float(probes.images.max()) > 1


def test_the_setup_check_runs_before_training_when_validation_comes_later(tmp_path: Any) -> None:
    """num_sanity_val_steps=0 and check_val_every_n_epoch=3: a wrong gradcam_layer fails at step 0, not after 9."""
    x, y = make_images(48)
    val = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)
    model = TinyCNN()
    monitor = AttributionMonitor(num_probes=4, methods=(GradCam(layer="features.99"), "integrated_gradients"))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=3, check_val_every_n_epoch=3, callbacks=[monitor]))
    with pytest.raises(ValueError, match="features.99"):
        trainer.fit(model, DataLoader(TensorDataset(x[16:], y[16:]), batch_size=8), val)
    assert trainer.global_step == 0


def test_setting_up_the_val_loader_early_keeps_training_bit_identical(tmp_path: Any) -> None:
    x, y = make_images(64)
    states = []
    for sub, callbacks in (
        ("a", []),
        (
            "b",
            [
                AttributionMonitor(
                    num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(detector=None)
                )
            ],
        ),
    ):
        torch.manual_seed(0)
        model = TinyCNN()
        train = DataLoader(TensorDataset(x[:48], y[:48]), batch_size=8, shuffle=True)
        val = DataLoader(TensorDataset(x[48:], y[48:]), batch_size=8)
        trainer = L.Trainer(
            **trainer_kwargs(tmp_path / sub, max_epochs=3, check_val_every_n_epoch=2, callbacks=callbacks)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, train, val)
        states.append((model.state_dict(), torch.random.get_rng_state()))
    for key, value in states[0][0].items():
        assert torch.equal(value, states[1][0][key]), key
    assert torch.equal(states[0][1], states[1][1])


class _DrawsItsValidation(TinyCNN):
    """``val_dataloader()`` draws its data from the global RNG when Lightning calls it (as Lightning's BoringModel)."""

    calls: list[int]

    def val_dataloader(self) -> DataLoader:
        self.calls.append(self.trainer.current_epoch)
        x = torch.randn(16, 1, 12, 12)
        return DataLoader(TensorDataset(x, torch.arange(16) % 4), batch_size=8)


@pytest.mark.parametrize("reload", [0, 2])
def test_the_early_val_loader_leaves_lightning_its_own_call_of_val_dataloader(tmp_path: Any, reload: int) -> None:
    """No sanity check, validation after epoch 1: the monitor sets the val loader up at train start for its probes;
    Lightning used to keep that set-up, so the plain run's ``val_dataloader()`` at epoch 1 (a draw from the RNG) never
    came and training differed. Now Lightning calls it when it would (the monitor's own call is one more)."""
    x, y = make_images(48)
    states, calls = [], []
    for sub, callbacks in (("a", []), ("b", [AttributionMonitor(num_probes=4, methods=("gradcam",))])):
        torch.manual_seed(0)
        model = _DrawsItsValidation()
        model.calls = []
        train = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
        kw = {"max_epochs": 4, "check_val_every_n_epoch": 2, "reload_dataloaders_every_n_epochs": reload}
        trainer = L.Trainer(**trainer_kwargs(tmp_path / sub, callbacks=callbacks, **kw))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, train)
        states.append((model.state_dict(), torch.random.get_rng_state()))
        calls.append(model.calls)
    assert all(torch.equal(value, states[1][0][key]) for key, value in states[0][0].items())
    assert torch.equal(states[0][1], states[1][1])
    assert calls[1] == [0, *calls[0]] and calls[0] == ([1, 3] if reload else [1])  # reload=2: every 2nd epoch


def test_model_checkpoint_and_early_stopping_on_a_drift_key_from_the_first_epoch(tmp_path: Any) -> None:
    """What the README advertises: ModelCheckpoint (no strict=False) and EarlyStopping on drift keys."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    x, y = make_images(48)
    key = "xai/gradcam/drift/rank_vs_previous/median"
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor=key, mode="max")
    stopping = EarlyStopping(monitor="xai/gradcam/drift/rank_vs_reference/median", mode="min", patience=5)
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(warmup_epochs=1)
    )
    trainer = L.Trainer(
        **trainer_kwargs(tmp_path, max_epochs=3, callbacks=[monitor, checkpoint, stopping], enable_checkpointing=True)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(
            TinyCNN(),
            DataLoader(TensorDataset(x[:32], y[:32]), batch_size=8),
            DataLoader(TensorDataset(x[32:], y[32:]), batch_size=8),
        )
    assert trainer.current_epoch == 3 and checkpoint.best_model_path
    assert float(trainer.callback_metrics[key]) == monitor.history[-1].scalars[key]  # the real value once it exists


class Batches8(Dataset):
    """A dataset whose items are whole batches (``DataLoader(batch_size=None)``)."""

    def __init__(self) -> None:
        self.x, self.y = make_images(32, seed=6)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[8 * i : 8 * i + 8], self.y[8 * i : 8 * i + 8]


def test_a_loader_of_whole_batches() -> None:
    probes = collect_probes(DataLoader(Batches8(), batch_size=None), num_probes=4, seed=0)
    assert probes.images.shape == (4, 1, 12, 12) and probes.labels is not None


def test_the_draw_leaves_a_samplers_own_generator_where_it_was() -> None:
    from torch.utils.data import RandomSampler

    x, y = make_images(32)
    generator = torch.Generator().manual_seed(5)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, sampler=RandomSampler(range(32), generator=generator))
    before = generator.get_state()
    collect_probes(loader, num_probes=4, seed=0)
    assert torch.equal(generator.get_state(), before)


class StreamOf(IterableDataset):
    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self) -> Any:
        return iter(zip(self.x, self.y, strict=True))


def test_persistent_workers_of_an_iterable_val_set_keep_training_bit_identical(tmp_path: Any) -> None:
    """The draw never iterates the user's loader: its persistent iterator is created at the first validation, as
    without the monitor (it draws its base seed from the global RNG there)."""
    states = []
    x, y = make_images(32, seed=3)
    for sub, callbacks in (
        ("a", []),
        (
            "b",
            [
                AttributionMonitor(
                    num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(detector=None)
                )
            ],
        ),
    ):
        torch.manual_seed(1)
        model = TinyCNN()
        torch.manual_seed(0)
        xt, yt = make_images(64)
        train = DataLoader(TensorDataset(xt, yt), batch_size=16, shuffle=True)
        val = DataLoader(StreamOf(x, y), batch_size=16, num_workers=1, persistent_workers=True)
        trainer = L.Trainer(**trainer_kwargs(tmp_path / sub, max_epochs=2, callbacks=callbacks))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, train, val)
        states.append(model.state_dict())
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key


class AddsItsChannel(TinyCNN):
    """Raw grayscale batches (B, H, W), as MNIST-style data gives them; the model adds the channel itself."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.unsqueeze(1) if x.ndim == 3 else x)


def test_batches_without_a_channel_are_refused_naming_probes_before_training(tmp_path: Any) -> None:
    x, y = make_images(48)
    model = AddsItsChannel()
    val = DataLoader(TensorDataset(x[:16, 0], y[:16]), batch_size=8)  # (B, H, W)
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[AttributionMonitor(num_probes=4)]))
    with pytest.raises(
        ValueError, match=r"`probes`: the validation dataloader's batches hold 3-D images \(8, 12, 12\)"
    ):
        trainer.fit(model, DataLoader(TensorDataset(x[16:, 0], y[16:]), batch_size=8), val)
    assert trainer.global_step == 0


def test_probes_are_converted_as_the_precision_plugin_converts_the_inputs(tmp_path: Any) -> None:
    """precision="64-true": Lightning casts every batch to float64 before the batch hooks; so does the draw."""

    class Normalises64(TinyCNN):
        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            x, y = batch
            return (x - 0.3) / 0.7, y

    x, y = make_images(32, seed=8)
    x16 = x.half()  # the model receives float64 of these, normalised in float64
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(detector=None)
    )
    _fit(tmp_path, monitor, DataLoader(TensorDataset(x16, y), batch_size=8), model=Normalises64(), precision="64-true")
    expected = ((x16.double() - 0.3) / 0.7).float()
    assert monitor.probes is not None
    assert all(any(torch.equal(p, e) for e in expected) for p in monitor.probes.images)


class _OpenedInWorkers(Dataset):
    """The HDF5/LMDB pattern: the storage is opened by ``worker_init_fn``; the main process cannot read it."""

    def __init__(self, x: Tensor, y: Tensor, opens: bool = True) -> None:
        self.data, self.opens, self.storage = (x, y), opens, None

    def __len__(self) -> int:
        return len(self.data[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if self.storage is None:
            raise RuntimeError("storage not opened: worker_init_fn must run first")
        return self.storage[0][i], self.storage[1][i]


def _open_storage(_: int) -> None:
    dataset = torch.utils.data.get_worker_info().dataset  # type: ignore[union-attr]
    if dataset.opens:
        dataset.storage = dataset.data


def test_a_dataset_read_only_in_the_loaders_workers_gives_probes_through_one_worker(tmp_path: Any) -> None:
    """A dataset whose ``worker_init_fn`` opens its storage crashed the fit before training with the user's own
    error (the probes were read in this process only): now they are read through one worker of the loader's kind,
    the same examples the model receives; a dataset no worker can read either is a named ``ValueError``."""
    x, y = make_images(32, seed=3)
    val = DataLoader(_OpenedInWorkers(x, y), batch_size=8, num_workers=1, worker_init_fn=_open_storage)
    monitor = AttributionMonitor(num_probes=6, methods=("gradcam",), drift=DriftPolicy(detector=None))
    _fit(tmp_path, monitor, val)
    assert monitor.probes is not None and len(monitor.probes) == 6 and monitor.evaluations == 1
    assert all(any(torch.equal(p, r) for r in x) for p in monitor.probes.images)
    broken = DataLoader(_OpenedInWorkers(x, y, opens=False), batch_size=8, num_workers=1, worker_init_fn=_open_storage)
    with pytest.raises(ValueError, match=r"`probes`: .*neither in this process .*probes=\(images, labels\)"):
        collect_probes(broken, num_probes=4, seed=0)


def test_with_workers_a_failing_hook_or_check_is_said_as_itself_not_as_an_unreadable_dataset() -> None:
    """The worker retry caught every failure: a batch hook's own error or the monitor's 3-D check came back as "the
    examples could not be read" (and started a worker for nothing)."""
    x, y = make_images(16, seed=4)
    val = DataLoader(TensorDataset(x, y), batch_size=8, num_workers=1)

    def broken(batch: Any) -> Any:
        raise KeyError("my_hook_bug")

    with pytest.raises(KeyError, match="my_hook_bug"):
        collect_probes(val, num_probes=4, seed=0, prepare=broken)
    flat = DataLoader(TensorDataset(x[:, 0], y), batch_size=8, num_workers=1)
    with pytest.raises(ValueError, match=r"3-D images .*\(B, H, W\)") as info:
        collect_probes(flat, num_probes=4, seed=0)
    assert "could not be read" not in str(info.value)


class _StreamInWorkers(IterableDataset):
    """A streaming dataset whose shard reader opens in the loader's workers only (iter() fails in the main process)."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.items = list(zip(x, y, strict=True))

    def __iter__(self) -> Any:
        info = torch.utils.data.get_worker_info()
        if info is None:
            raise OSError("the shard reader opens in the workers only")
        return iter(self.items[info.id :: info.num_workers])


def test_an_iterable_dataset_read_only_in_workers_gives_probes_through_one_worker() -> None:
    """Its iter() runs where the loader starts (outside the batches' reading): the worker retry missed it (review)."""
    x, y = make_images(32, seed=5)
    probes = collect_probes(DataLoader(_StreamInWorkers(x, y), batch_size=8, num_workers=2), num_probes=4, seed=0)
    assert len(probes) == 4 and all(any(torch.equal(p, r) for r in x) for p in probes.images)


class _NoShards(IterableDataset):
    def __iter__(self) -> Any:
        return next(iter([]))  # raises StopIteration when opened


def test_a_dataset_whose_iter_raises_stopiteration_is_not_a_bare_stopiteration() -> None:
    """A bare StopIteration out of ``fit`` (empty message) would also end a caller's own loop silently (review)."""
    with pytest.raises(ValueError, match="`probes`.*StopIteration"):  # named, the cause said
        collect_probes(DataLoader(_NoShards(), batch_size=4), num_probes=4, seed=0)


class _BadItems(Dataset):
    """Images whose items 5 and 6 cannot be read (a corrupted file), as validation with ``limit_val_batches`` never
    reads them."""

    def __init__(self, bad: tuple[int, ...] = (5, 6)) -> None:
        self.x, self.y = make_images(40)
        self.bad = bad

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if i in self.bad:
            raise OSError(f"image {i} is truncated")
        return self.x[i], self.y[i]


def test_a_few_unreadable_items_are_skipped_and_said_and_an_unreadable_dataset_is_named() -> None:
    """The draw reads items that validation may never read; a bad one stopped the fit before training with the
    dataset's own error (not naming `probes`). The batches that cannot be read are now left out, said once; a
    dataset that cannot be read at all is a named ValueError."""
    pool = collect_probes(DataLoader(_BadItems(), batch_size=4), num_probes=8, seed=0)
    said = [w for w in pool.warnings if "could not be read and are not used as probes" in w]
    assert len(pool) == 8 and len(said) == 1 and re.search(r"^[12] batch\(es\).*image [56] is truncated", said[0])
    with pytest.raises(ValueError, match=r"`probes`.*\(OSError: image \d+ is truncated\)"):
        collect_probes(DataLoader(_BadItems(tuple(range(40))), batch_size=4), num_probes=8, seed=0)


def test_fewer_probes_than_classes_names_the_classes_without_a_probe(tmp_path: Any, caplog: Any) -> None:
    """8 probes (the default) on 10 classes left classes 8 and 9 without a probe, said nowhere, while the alert sees
    a cue only where a probe shows it (new-user trial). The draw now says which classes have none and the
    ``num_probes`` that covers them; with a probe per class nothing is said."""
    import logging

    x, y = make_images(80, num_classes=10)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    for probes, said in ((8, True), (9, True), (10, False)):
        caplog.clear()
        monitor = AttributionMonitor(num_probes=probes, methods=("gradcam",))
        trainer = L.Trainer(**trainer_kwargs(tmp_path / str(probes), max_epochs=1, callbacks=[monitor]))
        with caplog.at_level(logging.INFO), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(TinyCNN(num_classes=10), loader, loader)
        found = [r.getMessage() for r in caplog.records if "no probe" in r.getMessage()]
        plural = ("the 8 probes cover 8 classes of the validation dataloader; classes 8, 9 have no probe, so what the "
                  "model learns for them is not watched")  # fmt: skip
        one = ("the 9 probes cover 9 classes of the validation dataloader; class 9 has no probe, so what the model "
               "learns for it is not watched")  # fmt: skip
        told = f"AttributionMonitor: {plural if probes == 8 else one}. `num_probes=10` gives every class one."
        assert found == ([told] if said else []), found
