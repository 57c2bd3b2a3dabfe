"""2-process CPU DDP launched by fork (``ddp_notebook``) and by spawn (``ddp_spawn``) with
``on_drift="raise"``: what the monitor recorded reaches the process that called ``fit``."""

from __future__ import annotations

import faulthandler
import glob
import os
import time
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import AttributionMonitor, DriftPolicy, DriftRule, IntegratedGradients

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available"),
]
TIMEOUT = 240


def _monitor(on_drift: str = "warn") -> AttributionMonitor:
    rule = DriftRule(threshold=0.0, patience=1)  # fires at the first evaluation after the reference (epoch 1)
    policy = DriftPolicy(warmup_epochs=0, rules=(rule,), detector=None, cooldown=0, on_drift=on_drift)
    return AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=policy)


def _fit(tmp_path: Any, monitor: AttributionMonitor, strategy: str, epochs: int) -> tuple[L.Trainer, TinyCNN]:
    logger = TensorBoardLogger(str(tmp_path / "logs"), name="run")
    kwargs = trainer_kwargs(tmp_path, max_epochs=epochs, callbacks=[monitor], logger=logger)
    trainer = L.Trainer(**{**kwargs, "strategy": strategy, "devices": 2})
    model = TinyCNN()
    faulthandler.dump_traceback_later(TIMEOUT, exit=True)  # a hang kills the test run with a traceback
    try:
        trainer.fit(model, *loaders())
    finally:
        faulthandler.cancel_dump_traceback_later()
    return trainer, model


def _tags(tmp_path: Any) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = {}
    for path in glob.glob(str(tmp_path / "logs" / "run" / "version_0" / "events.out.tfevents.*")):
        acc = EventAccumulator(path, size_guidance={"images": 0, "tensors": 0, "scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["images"]:
            steps.setdefault(tag, []).extend(e.step for e in acc.Images(tag))
        for tag in acc.Tags()["tensors"]:
            steps.setdefault(tag, []).extend(e.step for e in acc.Tensors(tag))
        for tag in acc.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(e.step for e in acc.Scalars(tag))
    return steps


@pytest.mark.skipif(os.name != "posix", reason="fork")
def test_ddp_notebook_history_and_alerts_reach_the_caller_and_a_later_validate_continues(tmp_path: Any) -> None:
    """``strategy="ddp_notebook"`` (fork, the multi-device strategy of notebooks): the workers are forked, nothing is
    pickled, so the results came back empty (history [], alerts []), and a later ``validate`` drew new probes and set
    a new reference instead of comparing with the fit's last maps."""
    monitor = _monitor()
    trainer, model = _fit(tmp_path, monitor, "ddp_notebook", epochs=2)
    assert [e.epoch for e in monitor.history] == [0, 1]
    assert [a.epoch for a in monitor.alerts] == [1, 1]
    faulthandler.dump_traceback_later(TIMEOUT, exit=True)
    try:
        trainer.validate(model, loaders()[1], verbose=False)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert len(monitor.history) == 3
    assert "xai/gradcam/drift/rank_vs_previous/median" in monitor.history[-1].scalars  # compared with the fit's


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_notebook"])
def test_ddp_raise_keeps_the_alert_epoch_in_the_logs_and_the_callers_monitor(tmp_path: Any, strategy: str) -> None:
    """``on_drift="raise"`` under ``ddp_spawn``: the worker dies with the exception without Lightning's
    ``on_exception``/``teardown`` there, so the alert epoch's sheet and alert text (queued on the background writer)
    were never written, and ``monitor.alerts``/``history`` stayed empty in the caller, the only place left to read
    the alert (the caller gets torch's ``ProcessRaisedException``, not ``DriftDetectedError``). Every rank raises, and
    torch ends the other workers as soon as one fails: rank 0 must not be ended before it wrote them."""
    if strategy == "ddp_notebook" and os.name != "posix":
        pytest.skip("fork")
    monitor = _monitor("raise")
    with pytest.raises(Exception, match="DriftDetectedError"):
        _fit(tmp_path, monitor, strategy, epochs=4)
    assert [e.epoch for e in monitor.history] == [0, 1]
    assert [a.epoch for a in monitor.alerts] == [1, 1]
    steps = _tags(tmp_path)
    assert steps["xai/sheet"] == [2, 4]
    assert steps["xai/alerts/text_summary"] == [4]
    assert steps["xai/seconds"] == [1, 3]  # the scalars the monitor writes to the loggers itself


class _SlowRankZero(AttributionMonitor):
    """Rank 0 reaches the end of the validation a moment after the others, as when it has many pictures to write."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            time.sleep(2.0)
        super().on_validation_end(trainer, pl_module)


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_notebook"])
def test_ddp_raise_waits_for_rank_zero_to_hand_back_before_the_workers_end(tmp_path: Any, strategy: str) -> None:
    """Every rank raises; torch ends every other worker as soon as one has failed. When rank 1 raised first, rank 0 was
    ended before it sent the results back: ``monitor.alerts`` stayed empty in the caller."""
    if strategy == "ddp_notebook" and os.name != "posix":
        pytest.skip("fork")
    rule = DriftRule(threshold=0.0, patience=1)
    policy = DriftPolicy(warmup_epochs=0, rules=(rule,), detector=None, cooldown=0, on_drift="raise")
    monitor = _SlowRankZero(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=policy)
    with pytest.raises(Exception, match="DriftDetectedError"):
        _fit(tmp_path, monitor, strategy, epochs=4)
    assert [a.epoch for a in monitor.alerts] == [1, 1]
    assert _tags(tmp_path)["xai/seconds"] == [1, 3]


def test_hand_back_flushes_the_loggers_before_the_worker_ends(tmp_path: Any) -> None:
    """A forked ``ddp_notebook`` worker ends with ``os._exit`` (no exit handlers), so what TensorBoard's event writer
    still queued was lost at random (the alert epoch's ``xai/seconds`` missing, its sheet there): ``hand_back`` asks
    every logger of rank 0 to save its buffers, as Lightning does after logging, before the error is raised."""
    from types import SimpleNamespace

    from lightning.pytorch.loggers import CSVLogger

    from lightning_xai import _distributed

    saved: list[str] = []

    class Recording(CSVLogger):
        def save(self) -> None:
            saved.append(self.name)
            super().save()

    loggers = [Recording(tmp_path, name="a"), Recording(tmp_path, name="b")]
    monitor = SimpleNamespace(
        media=SimpleNamespace(flush=lambda: saved.append("media")), _spawn_return=None, state_dict=dict
    )
    trainer = SimpleNamespace(is_global_zero=True, loggers=loggers, world_size=1, strategy=None)
    _distributed.hand_back(monitor, trainer)  # type: ignore[arg-type]
    assert saved == ["media", "a", "b"]  # the pictures queued first, then each logger's buffers


class _NotifyFailed(Exception):
    """A notifier that failed (e.g. a ``rank_zero_only`` message that could not be sent)."""


def _raise_on_rank_zero(alert: Any) -> None:
    if torch.distributed.get_rank() == 0:
        raise _NotifyFailed(f"could not send {alert.epoch}")


def _raise_on_rank_one(alert: Any) -> None:
    if torch.distributed.get_rank() == 1:
        raise _NotifyFailed(f"could not send {alert.epoch}")


@pytest.mark.parametrize("on_drift", [_raise_on_rank_zero, _raise_on_rank_one], ids=["rank0", "rank1"])
def test_ddp_an_on_drift_callable_raising_on_one_rank_ends_every_rank(tmp_path: Any, on_drift: Any) -> None:
    """A callable that raises on one rank only (a ``rank_zero_only`` notifier that failed): that rank waited in the
    hand-back's barrier while the others went on training, so the fit hung in mismatched collectives (before the
    barrier, torch ended the other workers at once)."""
    rule = DriftRule(threshold=0.0, patience=1)
    policy = DriftPolicy(warmup_epochs=0, rules=(rule,), detector=None, cooldown=0, on_drift=on_drift)
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=policy)
    with pytest.raises(Exception, match="_NotifyFailed|raised on another rank"):
        _fit(tmp_path, monitor, "ddp_spawn", epochs=4)
    assert [a.epoch for a in monitor.alerts] == [1]


def test_a_monitor_made_in_another_process_sends_the_results_to_the_one_that_launches_the_fit() -> None:
    """The return file was named with the process that made the monitor, so a forked sweep worker that called
    ``fit(strategy="ddp_spawn")`` never read its results (its ``history`` stayed empty) and the parent could read
    them later into its own copy. Pickled for the workers, the monitor now names a file for the pickling process;
    in that process a second pickle keeps it. A launcher subclassing Lightning's multiprocessing one counts too."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    from lightning_xai import _distributed

    monitor = _monitor()
    made_in_another = ("/tmp/lightning_xai_elsewhere.pt", os.getpid() + 1)
    monitor._spawn_return = made_in_another
    state = monitor.__getstate__()
    assert state["_spawn_return"][1] == os.getpid() and state["_spawn_return"][0] != made_in_another[0]
    assert monitor.__getstate__()["_spawn_return"] == state["_spawn_return"]  # kept in the launching process

    class _Subclass(_MultiProcessingLauncher):
        pass

    launched = SimpleNamespace(strategy=SimpleNamespace(launcher=_Subclass.__new__(_Subclass)))
    assert _distributed._launched_by_multiprocessing(launched)  # type: ignore[arg-type]
