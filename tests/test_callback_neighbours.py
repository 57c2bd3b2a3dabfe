"""Ordinary Lightning setups found in a new-user trial: weight averaging, ... (each test: a defect it caught)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from torch import Tensor

from lightning_xai import AttributionMonitor

callbacks = pytest.importorskip("lightning.pytorch.callbacks")


class _Fingerprinted(TinyCNN):
    """Records a fingerprint of the weights each validation ran with and each monitor forward explained."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, list[float]] = {"validation": [], "explained": []}

    def fingerprint(self) -> float:
        return float(self.features[0].weight.detach().sum())  # the head's sum is invariant under cross-entropy

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self.seen["validation"].append(self.fingerprint())
        super().validation_step(batch, batch_idx)


def _explained(module: Any, x: Tensor) -> Tensor:
    module.seen["explained"].append(module.fingerprint())
    return module(x)


@pytest.mark.skipif(not hasattr(callbacks, "EMAWeightAveraging"), reason="Lightning < 2.6")
@pytest.mark.parametrize("monitor_first", [True, False])
def test_ema_weight_averaging_explains_the_weights_validation_used_whatever_the_callback_order(
    tmp_path: Any, monitor_first: bool
) -> None:
    """EMAWeightAveraging swaps the averaged weights in at ``on_validation_epoch_start`` and back at
    ``on_validation_epoch_end``, where the monitor explains: listed after it, the monitor explained the training
    weights while validation (and ``val_loss``) used the averaged ones; listed before, the averaged ones."""

    def run(with_monitor: bool) -> tuple[_Fingerprinted, AttributionMonitor]:
        L.seed_everything(0, verbose=False)
        model, (train, val) = _Fingerprinted(), loaders()
        ema = callbacks.EMAWeightAveraging(decay=0.5)
        monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), forward_fn=_explained)
        cbs = ([monitor, ema] if monitor_first else [ema, monitor]) if with_monitor else [ema]
        L.Trainer(**trainer_kwargs(tmp_path, max_epochs=2, callbacks=cbs)).fit(model, train, val)
        return model, monitor

    model, monitor = run(True)
    initial = model.seen["explained"][0]  # the setup check at fit start, on the initial weights
    assert len(monitor.history) == 2
    assert set(model.seen["explained"]) - {initial} == set(model.seen["validation"])
    plain, _ = run(False)
    for (name, p), q in zip(model.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


class _Pruned(_Fingerprinted):
    def fingerprint(self) -> float:  # ``weight`` is recomputed by the pruning pre-hook only at the next forward
        conv = self.features[0]
        weight = conv.weight_orig * conv.weight_mask if hasattr(conv, "weight_mask") else conv.weight
        return float(weight.detach().sum())


def test_pruning_at_validation_end_explains_the_weights_validation_used(tmp_path: Any) -> None:
    """``ModelPruning(prune_on_train_epoch_end=False)`` prunes at ``on_validation_epoch_end``: listed before the
    monitor, the monitor explained weights pruned after the validation, which no validation had used."""
    L.seed_everything(0, verbose=False)
    model, (train, val) = _Pruned(), loaders()
    pruning = callbacks.ModelPruning("l1_unstructured", amount=0.3, prune_on_train_epoch_end=False, verbose=0)
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), forward_fn=_explained)
    L.Trainer(**trainer_kwargs(tmp_path, max_epochs=2, callbacks=[pruning, monitor])).fit(model, train, val)
    initial = model.seen["explained"][0]
    assert len(monitor.history) == 2
    assert set(model.seen["explained"]) - {initial} == set(model.seen["validation"])


def test_barebones_is_not_told_to_add_a_logger_it_refuses(tmp_path: Any) -> None:
    """``Trainer(barebones=True)`` refuses any logger; the warning told the user to add one."""
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",))
    trainer = L.Trainer(barebones=True, max_epochs=1, accelerator="cpu", callbacks=[monitor])
    with pytest.warns(UserWarning, match=r"barebones=True\)` has no logger") as record:
        trainer.fit(TinyCNN(), train, val)
    assert not any("Add `logger=" in str(w.message) for w in record)
    assert len(monitor.history) == 1


def test_four_channel_probes_with_mean_and_std_get_the_channel_error_before_training(tmp_path: Any) -> None:
    """RGBA probes with ``denormalize=(mean, std)`` (four of each) got the rendering path's nested error ('Rendering
    the probes for the logger failed at setup: ValueError: Cannot display ...') instead of the channel check's."""
    from lightning.pytorch.loggers import TensorBoardLogger

    L.seed_everything(0, verbose=False)
    x = torch.rand(32, 4, 12, 12)
    y = torch.arange(32) % 4
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), denormalize=([0.5] * 4, [0.25] * 4))
    stepped: list[int] = []

    class Counted(TinyCNN):
        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            stepped.append(batch_idx)
            return super().training_step(batch, batch_idx)

    logger = TensorBoardLogger(str(tmp_path))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor], logger=logger))
    with pytest.raises(ValueError, match=r"4 channels and images are shown with 1 \(grey\) or 3") as err:
        trainer.fit(Counted(channels=4), train, train)
    assert "Rendering the probes" not in str(err.value) and "(x * std + mean)[:, :3]" in str(err.value)
    assert stepped == []
