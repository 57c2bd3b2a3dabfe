"""Interrupted and repeated runs in one Python process (as in a notebook): a fit that ends in an exception or a
``KeyboardInterrupt``, then another fit with the same monitor; checkpoints that hold no state of this monitor."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from lightning.pytorch.callbacks import Callback

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
