"""A checkpoint written under other monitor settings (or by the old 31-argument API, whose state key had another
form) starts a new reference with one warning; the same settings resume without losing it."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_xai import AttributionMonitor, DriftPolicy, IntegratedGradients
from tests.conftest import TinyCNN, loaders, trainer_kwargs

#: the state key the old API wrote (lightning_xai 0.1 before the settings objects)
OLD_KEY = (
    "AttributionMonitor{gradcam(layer=None,reshape=None);integrated_gradients(n_steps=4,baseline=None);"
    "probes=val[4,seed=0];target=label}"
)


def monitor() -> AttributionMonitor:
    return AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(warmup_epochs=0)
    )


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    callbacks = [monitor(), ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)]
    L.Trainer(**trainer_kwargs(tmp_path, callbacks=callbacks, max_epochs=2, enable_checkpointing=True)).fit(
        TinyCNN(), train, val
    )
    return tmp_path / "ckpt" / "last.ckpt"


def resume(tmp_path: Path, path: Path, again: AttributionMonitor) -> list[str]:
    train, val = loaders()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        L.Trainer(**trainer_kwargs(tmp_path, callbacks=[again], max_epochs=3)).fit(
            TinyCNN(), train, val, ckpt_path=str(path)
        )
    return [str(w.message) for w in caught if "start afresh" in str(w.message)]


def test_an_old_checkpoint_starts_a_new_reference_with_one_warning(tmp_path: Path, checkpoint: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    (key,) = [k for k in state["callbacks"] if k.startswith("AttributionMonitor")]
    state["callbacks"][OLD_KEY] = state["callbacks"].pop(key)
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    again = monitor()
    said = resume(tmp_path, old, again)
    assert len(said) == 1 and OLD_KEY in said[0] and "written before the settings objects" in said[0]
    assert [h.epoch for h in again.history] == [2]  # a new history ...
    assert again.drift_tracker.reference_epochs == {"gradcam": 2, "integrated_gradients": 2}  # ... and reference


def test_the_same_settings_resume_silently_and_keep_the_reference(tmp_path: Path, checkpoint: Path) -> None:
    again = monitor()
    assert resume(tmp_path, checkpoint, again) == []
    assert [h.epoch for h in again.history] == [0, 1, 2]
    assert again.drift_tracker.reference_epochs == {"gradcam": 0, "integrated_gradients": 0}
