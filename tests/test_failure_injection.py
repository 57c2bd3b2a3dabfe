"""Failures injected into the monitor's own work (writer thread, media, checkpoint state, teardown) never
hang, kill or hide the user's run. See docs/failures.md."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import lightning.pytorch as L
import pytest
from conftest import TinyCNN, loaders, trainer_kwargs
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor, DriftPolicy, IntegratedGradients


def monitor() -> AttributionMonitor:
    return AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(warmup_epochs=0)
    )


def fit(tmp_path: Any, callbacks: list[Any], model: L.LightningModule | None = None, **kw: Any) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    kw.setdefault("max_epochs", 2)
    kw.setdefault("logger", TensorBoardLogger(str(tmp_path / "logs"), name="run"))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=callbacks, **kw))
    trainer.fit(model if model is not None else TinyCNN(), *loaders())
    return trainer


def recorded(fn: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught]


class ExitsOnTheWriter(TensorBoardLogger):
    """A logger whose ``log_metrics`` raises ``SystemExit`` once, on the monitor's writer thread only."""

    exits = 1

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if threading.current_thread().name == "lightning_xai-writer" and self.exits:
            self.exits -= 1
            raise SystemExit("a logger job exits")
        super().log_metrics(metrics, step)


def test_a_writer_job_raising_systemexit_neither_hangs_the_fit_nor_kills_it(tmp_path: Any) -> None:
    """The job's SystemExit ended the writer thread without marking the job done: the next thread took the later jobs
    and the flush at teardown waited on the queue forever."""
    result: list[Any] = []
    logger = ExitsOnTheWriter(str(tmp_path / "logs"), name="run")
    worker = threading.Thread(target=lambda: result.append(recorded(lambda: fit(tmp_path, [monitor()], logger=logger))))
    worker.daemon = True
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the fit hangs in the monitor's flush"
    assert any("SystemExit: a logger job exits" in m for m in result[0]), result


def disk_full(*args: Any, **kwargs: Any) -> None:
    raise OSError(28, "No space left on device (simulated)")


def test_a_writing_failure_is_warned_once_and_never_raised_under_warnings_as_errors(
    tmp_path: Any, monkeypatch: Any, caplog: Any
) -> None:
    """Writing failures were warned with ``rank_zero_warn`` at the flush: once per image per epoch, and under
    ``-W error`` the warning ended a fit that had trained to the end (docs: a failure report never raises)."""
    from lightning_xai.visualize import loggers

    monkeypatch.setattr(loggers, "_tensorboard_image", disk_full)
    messages = recorded(lambda: fit(tmp_path / "a", [monitor()], max_epochs=3))
    assert len([m for m in messages if "No space left on device" in m]) == 1, messages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.filterwarnings("error", message="AttributionMonitor: .*(skipped|failed)")
        trainer = fit(tmp_path / "b", [monitor()])
    assert trainer.current_epoch == 2
    assert any("No space left on device" in r.getMessage() for r in caplog.records)


def test_a_rendering_failure_is_warned_once_and_goes_to_history_and_xai_errors(tmp_path: Any, monkeypatch: Any) -> None:
    """A colormap that fails at run time: the media logger warned every epoch and the failure was in neither
    ``history[i].errors`` nor ``xai/errors`` (docs: warned once, in ``xai/errors`` every epoch it happens)."""
    from test_failure_isolation import events, texts

    from lightning_xai.visualize import sheet

    original = sheet.device_lut

    def vanished(name: str, device: str) -> Any:
        if armed:
            raise KeyError(f"colormap {name} vanished")
        return original(name, device)

    armed = False

    class Arm(L.Callback):
        def on_train_start(self, *args: Any) -> None:
            nonlocal armed
            armed = True

    monkeypatch.setattr(sheet, "device_lut", vanished)
    watched = monitor()
    messages = recorded(lambda: fit(tmp_path, [watched, Arm()], max_epochs=3))
    assert len([m for m in messages if "colormap jet vanished" in m]) == 1, messages
    assert all(any("rendering the pictures failed" in e for e in h.errors) for h in watched.history), [
        h.errors for h in watched.history
    ]
    errors = texts(events(tmp_path / "logs"), "xai/errors")
    assert len(errors) == 3 and "colormap jet vanished" in errors[0]


class UserBug(Exception):
    pass


class CrashesInSecondEpoch(TinyCNN):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.current_epoch == 1:
            raise UserBug("the user's own crash")
        return super().training_step(batch, batch_idx)


def test_a_failure_closing_the_media_never_replaces_the_users_exception(tmp_path: Any, monkeypatch: Any) -> None:
    """``on_exception`` closes the media: a sink whose close raised (its summary writers on a vanished log directory)
    replaced the user's own exception with the monitor's, and a clean fit ended in that error at teardown."""
    from lightning_xai.visualize.loggers import TensorBoardSink

    def broken_close(self: Any) -> None:
        raise OSError("the summary writer could not close")

    monkeypatch.setattr(TensorBoardSink, "close", broken_close)
    with pytest.raises(UserBug, match="the user's own crash"):
        fit(tmp_path / "a", [monitor()], model=CrashesInSecondEpoch())
    messages = recorded(lambda: fit(tmp_path / "b", [monitor()]))
    assert any("could not close" in m for m in messages), messages


@pytest.mark.parametrize("corrupt", ["history", "probes"])
def test_a_corrupted_monitor_state_in_a_checkpoint_does_not_stop_the_resume(tmp_path: Any, corrupt: str) -> None:
    """A checkpoint whose monitor state is corrupted (a hand-edited or truncated ``history``, probes that are not
    images) stopped ``fit(ckpt_path=...)`` with a raw TypeError/AttributeError naming neither the monitor nor the
    checkpoint; now it is said once and the monitor's run starts afresh, as for another monitor's state."""
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    fit(tmp_path / "a", [monitor(), checkpoint], enable_checkpointing=True)
    path = str(tmp_path / "ckpt" / "last.ckpt")
    saved = torch.load(path, weights_only=False)
    (key,) = [k for k in saved["callbacks"] if k.startswith("AttributionMonitor")]
    saved["callbacks"][key][corrupt] = [{"foo": 1}] if corrupt == "history" else "corrupted"
    torch.save(saved, path)
    resumed = monitor()
    trainer = L.Trainer(**trainer_kwargs(tmp_path / "b", callbacks=[resumed], max_epochs=3))
    messages = recorded(lambda: trainer.fit(TinyCNN(), *loaders(), ckpt_path=path))
    assert trainer.current_epoch == 3 and len(resumed.history) == 1  # epoch 2 trained and explained
    assert len([m for m in messages if "monitor state could not be read" in m]) == 1, messages


def test_a_monitor_state_that_cannot_be_built_never_stops_the_checkpoint(tmp_path: Any, monkeypatch: Any) -> None:
    """Building the monitor's checkpoint state raised (a bug in a tracker's ``state_dict``): Lightning's checkpoint
    save, and with it the fit, stopped. Now it is said once, the checkpoint holds the training state with an empty
    monitor state, and a resume from it starts the monitor's run afresh."""
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_xai.drift.tracker import DriftTracker

    def broken(self: Any) -> dict[str, Any]:
        raise RuntimeError("tracker state broken")

    monkeypatch.setattr(DriftTracker, "state_dict", broken)
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    messages = recorded(lambda: fit(tmp_path / "a", [monitor(), checkpoint], enable_checkpointing=True))
    assert len([m for m in messages if "could not be saved with the checkpoint" in m]) == 1, messages
    saved = torch.load(str(tmp_path / "ckpt" / "last.ckpt"), weights_only=True)
    mine = [state for key, state in saved["callbacks"].items() if key.startswith("AttributionMonitor")]
    assert not any(mine) and saved["state_dict"]  # no monitor state (Lightning leaves an empty one out); the weights
