"""Interrupted and repeated runs in one Python process (as in a notebook): a fit that ends in an exception or a
``KeyboardInterrupt``, then another fit with the same monitor; checkpoints that hold no state of this monitor."""

from __future__ import annotations

import signal
import warnings
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_xai import AttributionMonitor, DriftPolicy, DriftRule

ALWAYS = DriftRule(threshold=0.0, patience=1)  # fires at the first armed evaluation, then stays over (one event)


@pytest.fixture
def sigint() -> Iterator[None]:
    """Lightning ignores SIGINT after it handled a ``KeyboardInterrupt``: put pytest's handler back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


class Interrupt(Callback):
    """Ctrl+C in the middle of the fit, at ``hook`` once the fit reached ``step``."""

    def __init__(self, hook: str, step: int) -> None:
        self.hook, self.step = hook, step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.hook == "on_train_batch_end" and trainer.global_step == self.step:
            raise KeyboardInterrupt

    def on_validation_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.hook == "on_validation_epoch_end" and trainer.global_step == self.step:
            raise KeyboardInterrupt


def _interrupted_then_again(tmp_path: Any, on_drift: str, hook: str, monitored: bool) -> tuple[TinyCNN, L.Trainer]:
    L.seed_everything(0, verbose=False)
    model, (train, val) = TinyCNN(), loaders()
    policy = DriftPolicy(warmup_epochs=0, rules=(ALWAYS,), detector=None, on_drift=on_drift)
    monitor = [AttributionMonitor(num_probes=4, methods=("gradcam",), drift=policy)] if monitored else []
    kw = trainer_kwargs(tmp_path, max_epochs=2, val_check_interval=0.25)  # a validation after every batch
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown after Ctrl+C
        L.Trainer(**kw, callbacks=[*monitor, Interrupt(hook, 3 if hook == "on_train_batch_end" else 2)]).fit(
            model, train, val
        )
    again = L.Trainer(**kw, callbacks=monitor)
    again.fit(model, train, val)
    return model, again


@pytest.mark.parametrize(("on_drift", "hook"), [("stop", "on_train_batch_end"), ("raise", "on_validation_epoch_end")])
def test_a_stop_or_raise_pending_when_a_fit_is_interrupted_is_not_the_next_fits(
    tmp_path: Any, sigint: None, on_drift: str, hook: str
) -> None:
    """The alert at step 2 made ``on_drift="stop"`` wait for the end of the epoch (or ``"raise"`` for the end of the
    validation run); Ctrl+C came first. The next fit of the model (the same run: no new alert, one event) stopped
    after its first epoch, silently, or raised ``DriftDetectedError`` for the earlier fit's alert."""
    plain, _ = _interrupted_then_again(tmp_path / "plain", on_drift, hook, monitored=False)
    watched, again = _interrupted_then_again(tmp_path / "watched", on_drift, hook, monitored=True)
    assert again.global_step == 8 and again.current_epoch == 2  # both epochs trained
    for p, q in zip(plain.parameters(), watched.parameters(), strict=True):
        assert torch.equal(p, q)


def _checkpoint(tmp_path: Any, kind: str) -> str:
    """``last.ckpt`` of a 2-epoch fit: by a monitor of other settings, without a monitor, or with its entry deleted."""
    other = [AttributionMonitor(num_probes=6, methods=("gradcam",))] if kind == "other settings" else []
    mine = [AttributionMonitor(num_probes=4, methods=("gradcam",))] if kind == "entry deleted" else []
    saver = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    kw = trainer_kwargs(tmp_path, max_epochs=2, enable_checkpointing=True)
    L.seed_everything(2, verbose=False)
    L.Trainer(**kw, callbacks=[*other, *mine, saver]).fit(TinyCNN(), *loaders())
    path = str(tmp_path / "ckpt" / "last.ckpt")
    if mine:
        checkpoint = torch.load(path, weights_only=True)
        del checkpoint["callbacks"][mine[0].state_key]
        torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("kind", ["other settings", "no monitor", "entry deleted"])
def test_a_resume_from_a_checkpoint_without_this_monitors_state_starts_a_run_of_its_own(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A monitor that had run a fit of its own, resumed from a checkpoint that holds none of its state (another
    monitor's settings, written without the monitor, the user's edit): it went on with its earlier run, another
    training's, measuring the resumed model against that run's reference (rank drift 1.0) with both in ``history``;
    with other settings while saying that the state starts afresh. Now the resumed fit is a run of its own, said
    once."""
    import lightning_xai._runs as runs_module

    said: list[str] = []
    monkeypatch.setattr(runs_module, "rank_zero_info", said.append, raising=False)
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0))
    L.seed_everything(1, verbose=False)
    L.Trainer(**trainer_kwargs(tmp_path / "earlier", callbacks=[monitor], max_epochs=2)).fit(TinyCNN(), *loaders())
    assert [h.epoch for h in monitor.history] == [0, 1]
    path = _checkpoint(tmp_path / "written", kind)
    resumed = L.Trainer(**trainer_kwargs(tmp_path / "resumed", callbacks=[monitor], max_epochs=3))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        resumed.fit(TinyCNN(), *loaders(), ckpt_path=path)
    assert [h.epoch for h in monitor.history] == [2]  # the resumed training's own run
    assert monitor.drift_tracker.reference_epochs == {"gradcam": 2}
    assert monitor.history[0].scalars["xai/gradcam/drift/rank_vs_reference/median"] == 0.0
    afresh = [str(w.message) for w in warned if "start afresh" in str(w.message)]
    told = [m for m in said if "holds no state of this monitor" in m]
    assert (len(afresh), len(told)) == ((1, 0) if kind == "other settings" else (0, 1))
