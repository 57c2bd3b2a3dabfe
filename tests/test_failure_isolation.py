"""A failure inside what the monitor runs never kills the user's run, and on_drift acts when the docs say.

Run-time failures (the shared prediction pass, a malformed explanation, drift measurement, rendering, writing) are
skipped with one warning and an ``xai/errors`` entry; the writer thread never outlives a failed fit; ``"raise"``
logs the epoch's drift scalars first; ``"stop"`` stops at the end of the current training epoch; several monitors
keep their keys apart; history and alerts survive later trainer calls. See docs/failures.md.
"""

from __future__ import annotations

import glob
import os
import threading
import warnings
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor

from lightning_xai import AttributionMonitor, DriftDetectedError, DriftPolicy, DriftRule, IntegratedGradients
from lightning_xai.explain import Explainer, Explanation

ALWAYS = DriftRule(threshold=0.0, patience=1)  # fires at the first armed evaluation


def fit(tmp_path: Any, callbacks: list[Callback], model: L.LightningModule | None = None, **kw: Any) -> Any:
    L.seed_everything(0, verbose=False)
    model = model if model is not None else TinyCNN()
    kw.setdefault("max_epochs", 2)
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=callbacks, **kw))
    trainer.fit(model, *loaders())
    return model, trainer


def events(logdir: Any) -> EventAccumulator:
    files = glob.glob(os.path.join(str(logdir), "**", "events.out.tfevents.*"), recursive=True)
    assert files, f"no event file under {logdir}"
    acc = EventAccumulator(os.path.dirname(files[0]), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return acc


def texts(acc: EventAccumulator, tag: str) -> list[str]:
    if f"{tag}/text_summary" not in acc.Tags()["tensors"]:
        return []
    return [e.tensor_proto.string_val[0].decode() for e in acc.Tensors(f"{tag}/text_summary")]


def recorded(fn: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught]


# ----------------------------------------------------------------------------- malformed explainer output


class TurnsMalformed(Explainer):
    """A well-formed map at the setup dry run (its first call), then ``bad`` output at every evaluation."""

    def __init__(self, name: str, bad: str) -> None:
        self.name, self.bad, self.calls = name, bad, 0

    def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Explanation:
        self.calls += 1
        maps = torch.rand(inputs.shape[0], *inputs.shape[-2:])
        if self.calls == 1:
            return Explanation(maps, maps.clone())
        if self.bad == "float_diagnostic":
            return Explanation(maps, maps.clone(), {"score": 0.5})  # type: ignore[dict-item]
        if self.bad == "1d_map":
            return Explanation(maps.flatten(1)[:, 0], maps.clone())
        return Explanation(maps[:-1], maps[:-1].clone())  # fewer maps than probes


@pytest.mark.parametrize("bad", ["float_diagnostic", "1d_map", "fewer_maps"])
def test_malformed_explanation_is_skipped_with_one_warning_and_xai_errors(tmp_path: Any, bad: str) -> None:
    explainer = TurnsMalformed("custom", bad)
    monitor = AttributionMonitor(num_probes=4, methods=["gradcam", explainer], drift=DriftPolicy(warmup_epochs=0))
    logdir = tmp_path / "logs"
    messages = recorded(lambda: fit(tmp_path, [monitor], logger=TensorBoardLogger(str(logdir), name="run")))
    assert explainer.calls == 3 and len(monitor.history) == 2  # dry run + 2 epochs; both epochs trained
    assert len([m for m in messages if "custom skipped" in m]) == 1, messages  # one warning, not one per epoch
    for record in monitor.history:
        assert any("custom skipped" in e and "malformed Explanation" in e for e in record.errors), record.errors
        assert "xai/gradcam/drift/rank_vs_previous/median" in record.scalars or record.epoch == 0  # gradcam goes on
    assert len(texts(events(logdir), "xai/errors")) == 2


# ------------------------------------------------------------------------------------ the prediction pass


class FailsOnProbesOnce(TinyCNN):
    """Its forward raises (like an out-of-memory) on the probe batch while armed (the monitor puts a model's plain
    attributes back after its passes, so the arming callback disarms it, not the forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: Tensor) -> Tensor:
        if self.armed and not self.training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x)


class ArmAtFirstEvaluation(Callback):
    """Placed before the monitor: arms the model right before the monitor's first evaluation, disarms it after."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            pl_module.armed = True  # type: ignore[assignment]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.armed = False  # type: ignore[assignment]


def test_prediction_pass_failure_skips_that_evaluation_only(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(warmup_epochs=0)
    )
    model = FailsOnProbesOnce()
    callbacks = [ArmAtFirstEvaluation(), monitor]
    messages = recorded(lambda: fit(tmp_path, callbacks, model=model, logger=TensorBoardLogger(str(tmp_path))))
    assert len(monitor.history) == 2  # both epochs trained and evaluated
    first, second = monitor.history
    assert any("prediction pass failed at epoch 0" in e and "OutOfMemoryError" in e for e in first.errors)
    assert not [k for k in first.scalars if "/drift/" in k]
    assert not second.errors and "xai/gradcam/drift/rank_vs_previous/median" not in second.scalars
    assert "xai/gradcam/drift/rank_vs_reference/median" in second.scalars  # epoch 1 became the reference
    assert len([m for m in messages if "prediction pass failed" in m]) == 1


# ------------------------------------------------------------------ measuring, rendering, writing


def test_drift_measurement_failure_is_skipped(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_xai.monitor as monitor_module

    original, calls = monitor_module.measure, []

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("drift exploded")
        return original(*args, **kwargs)

    monkeypatch.setattr(monitor_module, "measure", fails_once)
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(warmup_epochs=0)
    )
    messages = recorded(lambda: fit(tmp_path, [monitor]))
    assert len(monitor.history) == 2 and len(calls) == 2
    assert any("measuring drift failed: RuntimeError: drift exploded" in e for e in monitor.history[0].errors)
    assert any("measuring drift failed" in m for m in messages)


class LaterBrokenDenormalize:
    """Fine for the setup dry run; raises once armed (after training started): rendering fails at run time."""

    def __init__(self) -> None:
        self.armed = False

    def __call__(self, x: Tensor) -> Tensor:
        if self.armed:
            raise RuntimeError("display exploded")
        return x


class Arm(Callback):
    def __init__(self, target: Any) -> None:
        self.target = target

    def on_train_batch_start(self, *args: Any) -> None:
        self.target.armed = True


def test_rendering_failure_is_skipped_and_training_goes_on(tmp_path: Any) -> None:
    """The media logger catches its own rendering failures (a warning, nothing logged that epoch); what escapes it
    is caught by the monitor (a warning, ``history[i].errors`` and an ``xai/errors`` text)."""
    denormalize = LaterBrokenDenormalize()
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=2)),
        denormalize=denormalize,
        drift=DriftPolicy(warmup_epochs=0),
    )
    logger = TensorBoardLogger(str(tmp_path / "logs"), name="run")
    messages = recorded(lambda: fit(tmp_path, [monitor, Arm(denormalize)], logger=logger))
    assert len(monitor.history) == 2  # both epochs trained and evaluated
    assert any("display exploded" in m for m in messages), messages
    assert "xai/gradcam/drift/rank_vs_previous/median" in monitor.history[1].scalars  # measuring went on


def test_media_failure_outside_the_media_logger_goes_to_xai_errors(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(warmup_epochs=0)
    )

    def broken_sinks(trainer: Any) -> list[Any]:
        raise RuntimeError("no sink for you")

    monitor.media.sinks = broken_sinks  # type: ignore[method-assign]
    logdir = tmp_path / "logs"
    messages = recorded(lambda: fit(tmp_path, [monitor], logger=TensorBoardLogger(str(logdir), name="run")))
    assert len(monitor.history) == 2
    assert all(any("logging images and tables failed" in e for e in h.errors) for h in monitor.history)
    assert len([m for m in messages if "no sink for you" in m]) == 1  # one warning for the same failure
    errors = texts(events(logdir), "xai/errors")
    assert len(errors) == 2 and "no sink for you" in errors[0]


def test_writing_failure_is_a_warning(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_xai.visualize import loggers

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(loggers, "_tensorboard_image", refuse)  # writing an image event fails
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)))
    messages = recorded(lambda: fit(tmp_path, [monitor], logger=TensorBoardLogger(str(tmp_path))))
    assert len(monitor.history) == 2
    assert any("disk full" in m for m in messages), messages


# ------------------------------------------------------------------------------------------ writer thread


class CrashInSecondEpoch(TinyCNN):
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self.current_epoch == 1:
            raise RuntimeError("user code crashed")
        return super().training_step(batch, batch_idx)


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lightning_xai-writer" and t.is_alive()]


def test_writer_thread_does_not_outlive_a_failed_fit(tmp_path: Any) -> None:
    before = len(writer_threads())
    for i in range(3):
        monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=2)))
        with pytest.raises(RuntimeError, match="user code crashed"):
            fit(tmp_path / str(i), [monitor], model=CrashInSecondEpoch(), logger=TensorBoardLogger(str(tmp_path)))
        assert len(monitor.history) == 1
    assert len(writer_threads()) == before


# ------------------------------------------------------------------------------------------------ on_drift


def test_raise_logs_the_epoch_drift_scalars_first(tmp_path: Any) -> None:
    logdir = tmp_path / "logs"
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=2)),
        drift=DriftPolicy(warmup_epochs=0, detector=None, rules=(ALWAYS,), on_drift="raise"),
    )
    with pytest.raises(DriftDetectedError) as info:
        fit(tmp_path, [monitor], max_epochs=5, logger=TensorBoardLogger(str(logdir), name="run"))
    assert info.value.alert.epoch == 1
    tag = "xai/gradcam/drift/rank_vs_reference/median"
    logged = events(logdir).Scalars(tag)
    assert len(logged) == 2  # epoch 0 (the reference) and epoch 1, the one that raised
    assert logged[-1].value == pytest.approx(monitor.history[-1].scalars[tag])


class Explode(Exception):
    pass


def test_on_drift_callable_that_raises_ends_the_run_after_logging(tmp_path: Any) -> None:
    seen: list[Any] = []

    def strict(alert: Any) -> None:
        seen.append(alert)
        raise Explode(f"stop the sweep: {alert.method}")

    logdir = tmp_path / "logs"
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=2)),
        drift=DriftPolicy(warmup_epochs=0, detector=None, rules=(ALWAYS,), on_drift=strict),
    )
    with pytest.raises(Explode, match="stop the sweep"):
        fit(tmp_path, [monitor], max_epochs=5, logger=TensorBoardLogger(str(logdir), name="run"))
    assert len(seen) == 1 and len(monitor.history) == 2 and len(monitor.alerts) == 2
    assert len(events(logdir).Scalars("xai/gradcam/drift/rank_vs_reference/median")) == 2


def test_stop_with_val_check_interval_finishes_the_training_epoch(tmp_path: Any) -> None:
    # 4 training batches per epoch, validation every 2: the reference at step 2, armed from step 4; a patience of 2
    # fires mid-epoch 1 (step 6), so the rest of epoch 1 trains before the fit stops
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=2)),
        drift=DriftPolicy(
            warmup_epochs=0, detector=None, rules=(DriftRule(threshold=0.0, patience=2),), on_drift="stop"
        ),
    )
    _, trainer = fit(tmp_path, [monitor], max_epochs=5, val_check_interval=0.5)
    assert monitor.alerts[0].global_step == 6
    assert trainer.global_step == 8 and trainer.current_epoch == 2  # the rest of epoch 1 trained, then it stopped
    assert [(h.epoch, h.global_step) for h in monitor.history] == [(0, 2), (0, 4), (1, 6), (1, 8)]


def test_stop_without_val_check_interval_stops_after_the_epoch(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=2)),
        drift=DriftPolicy(warmup_epochs=0, detector=None, rules=(ALWAYS,), on_drift="stop"),
    )
    _, trainer = fit(tmp_path, [monitor], max_epochs=5)
    assert monitor.alerts[0].epoch == 1 and trainer.current_epoch == 2


# ------------------------------------------------------------------------------------- several monitors


def test_two_unnamed_monitors_are_refused_at_setup(tmp_path: Any) -> None:
    model = TinyCNN()
    with pytest.raises(ValueError, match=r"2 AttributionMonitors with `name=None`.*Give each its own `name=`"):
        fit(tmp_path, [AttributionMonitor(num_probes=4), AttributionMonitor(num_probes=4, seed=1)], model=model)
    assert model.global_step == 0


def test_named_monitors_log_apart(tmp_path: Any) -> None:
    grad = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0), name="a")
    other = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0), seed=3, name="b")
    _, trainer = fit(tmp_path, [grad, other])
    metrics = trainer.callback_metrics
    key = "gradcam/drift/rank_vs_previous/median"
    assert f"xai/{key}" not in metrics
    for monitor in (grad, other):
        assert float(metrics[f"xai/{monitor.name}/{key}"]) == pytest.approx(monitor.history[-1].scalars[f"xai/{key}"])
    assert grad.state_key != other.state_key and "'name': 'a'" in grad.state_key


# --------------------------------------------------------------------------- later trainer calls


class PredictingCNN(TinyCNN):
    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self(batch[0])


def test_history_and_alerts_survive_validate_test_and_predict(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=2)),
        drift=DriftPolicy(warmup_epochs=0, rules=(ALWAYS,)),
    )
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    model, trainer = fit(tmp_path, [monitor, ckpt], model=PredictingCNN(), enable_checkpointing=True)
    history, alerts = [h.to_dict() for h in monitor.history], list(monitor.alerts)
    assert alerts
    _, val = loaders()
    path = str(tmp_path / "ckpt" / "last.ckpt")
    trainer.validate(model, val)
    trainer.validate(model, val, ckpt_path=path)
    trainer.test(model, val, ckpt_path=path)
    trainer.predict(model, val)
    trainer.predict(model, val, ckpt_path=path)
    assert [h.to_dict() for h in monitor.history[: len(history)]] == history  # nothing lost or rewritten
    assert len(monitor.history) == len(history) + 3  # validate, validate, test
    assert monitor.alerts[: len(alerts)] == alerts


# ------------------------------------------------------------------------------------------- distributed


def test_a_setup_failure_on_one_rank_stops_every_rank() -> None:
    """The dry run's outcome is agreed: a rank whose own check passed raises too, instead of training on."""
    from lightning_xai._distributed import on_every_rank

    decisions: list[bool] = []

    def other_rank_failed(local: torch.Tensor, reduce_op: str) -> torch.Tensor:  # the other rank adds its 1
        decisions.append(bool(local))
        return local + 1 if reduce_op == "sum" else local

    strategy = SimpleNamespace(reduce=other_rank_failed, root_device=torch.device("cpu"))
    trainer = SimpleNamespace(world_size=2, strategy=strategy)
    with pytest.raises(RuntimeError, match="failed on another rank"):
        on_every_rank(trainer, lambda: "fine here")  # type: ignore[arg-type]
    assert decisions == [False]
    with pytest.raises(ValueError, match="mine"):
        on_every_rank(trainer, lambda: (_ for _ in ()).throw(ValueError("mine")))  # type: ignore[arg-type]


def test_ranks_agree_on_raising_only_when_a_callable_got_an_alert() -> None:
    """Every rank acts on rank 0's broadcast alerts, so "stop", "raise" and a callable without alerts decide alike on
    every rank: no collective. Each one was an ``all_reduce`` at the end of every validation and test; the one at the
    end of a ``ddp_spawn`` test could abort the worker as it exited (gloo's thread freed the tensor after the
    interpreter began to exit). A callable that got an alert may have raised on one rank only: then the ranks ask."""
    from lightning.pytorch.trainer.states import TrainerFn

    from lightning_xai._trainer import DriftActions
    from lightning_xai.drift.alerts import DriftAlert, DriftDetectedError

    asked: list[bool] = []

    def reduce(local: torch.Tensor, reduce_op: str) -> torch.Tensor:
        asked.append(bool(local))
        return local + 1  # another rank's callable raised

    state = SimpleNamespace(fn=TrainerFn.FITTING)
    trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(reduce=reduce, root_device="cpu"), state=state)
    alert = DriftAlert(4, 40, "gradcam", "novel_relevance", "mean", 0.2, 0.01, (0, 1), "moved.")
    quiet = DriftActions(lambda a: None)
    quiet.act(trainer, [])  # type: ignore[arg-type]
    quiet.raise_pending(trainer, lambda: None)  # type: ignore[arg-type]
    stop = DriftActions("stop")
    with pytest.warns(UserWarning, match="moved"):
        stop.act(trainer, [alert])  # type: ignore[arg-type]
    assert stop.stop_pending and asked == []
    raising = DriftActions("raise")
    with pytest.warns(UserWarning, match="moved"):
        raising.act(trainer, [alert])  # type: ignore[arg-type]
    with pytest.raises(DriftDetectedError):
        raising.raise_pending(trainer, lambda: None)  # type: ignore[arg-type]
    assert asked == []
    told = DriftActions(lambda a: None)  # fine here, raised on the other rank
    told.act(trainer, [alert])  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="raised on another rank"):
        told.raise_pending(trainer, lambda: None)  # type: ignore[arg-type]
    assert asked == [False]
    told.raise_pending(trainer, lambda: None)  # type: ignore[arg-type]  # asked once per delivery
    assert asked == [False]


def test_at_teardown_the_ranks_let_the_process_groups_threads_run_before_exiting() -> None:
    """A ``ddp_spawn`` worker could abort as it exited after a short ``test`` (SIGABRT, a core dump: gloo's thread
    freeing the tensor of a broadcast the monitor had just made needed the GIL after the interpreter began to exit).
    With several processes the monitor's teardown now releases the GIL for a moment: another thread runs then."""
    import threading
    import time

    from lightning_xai import _distributed

    ran: list[float] = []
    started = threading.Event()

    def other() -> None:  # a thread that wants the GIL, as gloo's does to free a tensor
        started.set()
        deadline = time.perf_counter() + 2 * _distributed.SETTLE_SECONDS
        while time.perf_counter() < deadline:
            ran.append(time.perf_counter())

    monitor = SimpleNamespace(_spawn_return=None, state_dict=dict)
    trainer = SimpleNamespace(world_size=2, is_global_zero=False, strategy=None)
    worker = threading.Thread(target=other)
    worker.start()
    started.wait()
    before = time.perf_counter()
    _distributed.end_of_run(monitor, trainer)  # type: ignore[arg-type]
    after = time.perf_counter()
    worker.join()
    assert after - before >= _distributed.SETTLE_SECONDS
    assert sum(before < t < after for t in ran) > 100  # the other thread ran meanwhile
