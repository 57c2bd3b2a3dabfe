"""End-to-end behaviour of AttributionMonitor inside real Trainer runs."""

from __future__ import annotations

import csv
import dataclasses
import glob
import os
import random
import warnings
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import (
    AttributionMonitor,
    Display,
    DriftAlert,
    DriftDetectedError,
    DriftPolicy,
    DriftRule,
    IntegratedGradients,
)

ALWAYS = DriftRule(threshold=0.0, patience=1)  # fires at the first armed evaluation


def fit(tmp_path: Any, callbacks: list[Callback], seed: int = 0, **kw: Any) -> tuple[TinyCNN, L.Trainer]:
    L.seed_everything(seed, verbose=False)
    model = TinyCNN()
    train, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=callbacks, **kw))
    trainer.fit(model, train, val)
    return model, trainer


def read_events(logdir: str) -> EventAccumulator:
    files = glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)
    assert files, f"no event file under {logdir}"
    acc = EventAccumulator(os.path.dirname(files[0]), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_training_is_bit_identical_with_and_without_monitor(tmp_path: Any) -> None:
    plain, _ = fit(tmp_path / "a", [])
    monitor = AttributionMonitor(
        num_probes=8, methods=("gradcam", IntegratedGradients(n_steps=8)), drift=DriftPolicy(warmup_epochs=1)
    )
    watched, _ = fit(tmp_path / "b", [monitor], logger=TensorBoardLogger(str(tmp_path / "b" / "logs")))
    assert monitor.evaluations == 3
    for (name, p), (_, q) in zip(plain.state_dict().items(), watched.state_dict().items(), strict=False):
        assert torch.equal(p, q), name
    # the RNG streams after training are where they would be without the monitor
    assert torch.equal(torch.random.get_rng_state(), _rng_after(tmp_path / "c"))


def _rng_after(path: Any) -> torch.Tensor:
    fit(path, [])
    return torch.random.get_rng_state()


def test_explanation_leaves_grads_rng_modes_buffers_and_hooks(tmp_path: Any) -> None:
    """Call the evaluation directly in the middle of a training state full of things to disturb."""
    snapshots: dict[str, Any] = {}

    class Probe(Callback):
        def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            pl_module.train()
            for p in pl_module.parameters():
                p.grad = torch.full_like(p, 0.5)
            snapshots["grads"] = [p.grad.clone() for p in pl_module.parameters()]
            snapshots["grad_ids"] = [id(p.grad) for p in pl_module.parameters()]
            snapshots["buffers"] = [b.clone() for b in pl_module.buffers()]
            snapshots["hooks"] = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in pl_module.modules()]
            snapshots["rng"] = (
                torch.random.get_rng_state(),
                np.random.get_state()[1].copy(),
                random.getstate(),
            )
            monitor._evaluate(trainer, pl_module)
            assert all(m.training for m in pl_module.modules())
            assert [id(p.grad) for p in pl_module.parameters()] == snapshots["grad_ids"]
            for p, g in zip(pl_module.parameters(), snapshots["grads"], strict=False):
                assert torch.equal(p.grad, g)
            for b, s in zip(pl_module.buffers(), snapshots["buffers"], strict=False):
                assert torch.equal(b, s)
            assert snapshots["hooks"] == [
                len(m._forward_hooks) + len(m._forward_pre_hooks) for m in pl_module.modules()
            ]
            assert torch.equal(torch.random.get_rng_state(), snapshots["rng"][0])
            assert np.array_equal(np.random.get_state()[1], snapshots["rng"][1])
            assert random.getstate() == snapshots["rng"][2]
            assert all(p.requires_grad for p in pl_module.parameters())
            for p in pl_module.parameters():
                p.grad = None
            pl_module.eval()
            snapshots["checked"] = True

    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), every_n_epochs=100
    )  # never runs by itself
    fit(tmp_path, [monitor, Probe()], max_epochs=1)
    assert snapshots.get("checked")


def test_event_files_hold_images_scalars_and_tables(tmp_path: Any) -> None:
    logdir = str(tmp_path / "logs")
    monitor = AttributionMonitor(
        num_probes=8,
        methods=("gradcam", IntegratedGradients(n_steps=8)),
        drift=DriftPolicy(warmup_epochs=1),
        display=Display(log_heatmaps=True, log_grids=True),
    )
    fit(tmp_path, [monitor], logger=TensorBoardLogger(logdir, name="run"))
    acc = read_events(logdir)
    images = acc.Tags()["images"]
    for tag in ("xai/gradcam/overlay", "xai/integrated_gradients/overlay", "xai/gradcam/heatmap"):
        assert tag in images
        assert len(acc.Images(tag)) == 3  # one per evaluated epoch
    assert len(acc.Images("xai/probes")) == 1
    probe_img = acc.Images("xai/probes")[0]
    assert (probe_img.width, probe_img.height) == (8 * 14 + 2, 14 + 2)  # 8 probes of 12x12 in one row
    scalars = acc.Tags()["scalars"]
    for method in ("gradcam", "integrated_gradients"):
        for ref in ("previous", "reference"):
            for stat in ("median", "share"):
                tag = f"xai/{method}/drift/rank_vs_{ref}/{stat}"
                assert tag in scalars, tag
    previous = [e.value for e in acc.Scalars("xai/gradcam/drift/rank_vs_previous/median")]
    assert len(previous) == 3 and previous[0] == 0.0  # from the first evaluation on: 0 before there is a previous
    reference = [e.value for e in acc.Scalars("xai/gradcam/drift/rank_vs_reference/median")]
    assert len(reference) == 3 and reference[:2] == [0.0, 0.0]  # 0 in the warm-up and at the reference (epoch 1)
    gaps = acc.Scalars("xai/integrated_gradients/completeness_gap")
    assert len(gaps) == 3 and all(np.isfinite(e.value) for e in gaps)
    texts = acc.Tags()["tensors"]
    assert "xai/predictions/text_summary" in texts
    table = acc.Tensors("xai/predictions/text_summary")
    assert len(table) == 3
    assert "| probe | label | target | predicted | confidence |" in table[0].tensor_proto.string_val[0].decode()


def test_probes_are_class_balanced_deterministic_and_on_cpu(tmp_path: Any) -> None:
    first = AttributionMonitor(num_probes=8, methods=("gradcam", IntegratedGradients(n_steps=4)), seed=3)
    second = AttributionMonitor(num_probes=8, methods=("gradcam", IntegratedGradients(n_steps=4)), seed=3)
    other = AttributionMonitor(
        num_probes=8, methods=("gradcam", IntegratedGradients(n_steps=4)), seed=4, name="other"
    )  # two monitors in one Trainer
    fit(tmp_path, [first], max_epochs=1)
    fit(tmp_path, [second, other], max_epochs=1)
    assert first.probes is not None and second.probes is not None and other.probes is not None
    assert torch.equal(first.probes.images, second.probes.images)
    assert not torch.equal(first.probes.images, other.probes.images)
    assert first.probes.images.device.type == "cpu"
    assert sorted(first.probes.labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_resume_restores_probes_reference_history_and_alerts(tmp_path: Any) -> None:
    ckpt_dir = tmp_path / "ckpt"
    monitor = AttributionMonitor(
        num_probes=6,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0, rules=(ALWAYS,)),
        seed=1,
    )
    checkpoint = ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True)
    fit(tmp_path, [monitor, checkpoint], max_epochs=2, enable_checkpointing=True)
    assert len(monitor.alerts) == 2  # epoch 1: one per method
    path = str(ckpt_dir / "last.ckpt")
    state = torch.load(path, weights_only=True)["callbacks"][monitor.state_key]
    assert torch.equal(state["probes"], monitor.probes.images)

    resumed = AttributionMonitor(
        num_probes=6,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0, rules=(ALWAYS,)),
        seed=99,
    )
    resumed_key_monitor = AttributionMonitor(
        num_probes=6,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0, rules=(ALWAYS,)),
        seed=1,
    )
    assert resumed.state_key != resumed_key_monitor.state_key  # different settings, distinct keys
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=[resumed_key_monitor], max_epochs=3))
    trainer.fit(TinyCNN(), train, val, ckpt_path=path)
    after = resumed_key_monitor
    assert torch.equal(after.probes.images, monitor.probes.images)
    assert torch.equal(after.drift_tracker.reference["gradcam"], monitor.drift_tracker.reference["gradcam"])
    assert after.drift_tracker.reference_epochs == {"gradcam": 0, "integrated_gradients": 0}
    assert [a.epoch for a in after.alerts[:2]] == [1, 1]
    assert len(after.history) == 3 and after.history[0].epoch == 0
    # cooldown=0 and threshold 0: the event continues at epoch 2, so no second alert (one event, one alert)
    assert len(after.alerts) == 2


def test_resume_with_other_settings_says_the_state_starts_afresh(tmp_path: Any) -> None:
    ckpt_dir = tmp_path / "ckpt"
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)))
    fit(
        tmp_path,
        [monitor, ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True)],
        max_epochs=1,
        enable_checkpointing=True,
    )
    path = str(ckpt_dir / "last.ckpt")
    other = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=8)))
    train, val = loaders()
    with pytest.warns(UserWarning, match=r"checkpoint holds monitor state for .*n_steps=4"):
        L.Trainer(**trainer_kwargs(tmp_path, callbacks=[other], max_epochs=2)).fit(
            TinyCNN(), train, val, ckpt_path=path
        )
    assert other.history[0].epoch == 1  # nothing restored
    same = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*checkpoint holds monitor state.*")
        L.Trainer(**trainer_kwargs(tmp_path, callbacks=[same], max_epochs=2)).fit(TinyCNN(), train, val, ckpt_path=path)
    assert same.history[0].epoch == 0  # restored


def test_validate_under_inference_mode(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)))
    L.seed_everything(0, verbose=False)
    model = TinyCNN()
    _, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], inference_mode=True))
    trainer.validate(model, val)
    assert monitor.evaluations == 1
    assert not monitor.history[0].errors
    assert "xai/integrated_gradients/completeness_gap" in monitor.history[0].scalars  # (to the loggers directly)
    trainer.test(model, val)  # test loop does not explain, but must not break
    trainer.validate(model, val)
    assert "xai/gradcam/drift/rank_vs_previous/median" in trainer.callback_metrics


def test_stop_action_stops_training(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=1, rules=(ALWAYS,), on_drift="stop"),
    )
    _, trainer = fit(tmp_path, [monitor], max_epochs=10)
    assert trainer.current_epoch == 3  # epochs 0-2 ran: reference at 1, alert at the end of 2 -> stop
    assert monitor.alerts and monitor.alerts[0].epoch == 2


def test_callable_receives_drift_alerts(tmp_path: Any) -> None:
    received: list[DriftAlert] = []
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0, rules=(ALWAYS,), on_drift=received.append),
    )
    fit(tmp_path, [monitor], max_epochs=2)
    assert len(received) == 2 and {a.method for a in received} == {"gradcam", "integrated_gradients"}
    alert = received[0]
    assert isinstance(alert, DriftAlert) and alert.epoch == 1 and alert.metric == "rank_vs_reference"
    assert alert.threshold == 0.0 and "drift" in alert.message.lower()
    with pytest.raises(dataclasses.FrozenInstanceError):
        alert.epoch = 5  # type: ignore[misc]  # frozen


def test_raise_action_and_warn_action(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0, rules=(ALWAYS,), on_drift="raise"),
    )
    with pytest.raises(DriftDetectedError, match="Attribution drift"):
        fit(tmp_path, [monitor], max_epochs=3)
    warn = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0, rules=(ALWAYS,)),
    )
    with pytest.warns(UserWarning, match="Attribution drift"):
        fit(tmp_path / "w", [warn], max_epochs=2)


def test_alerts_respect_warmup_patience_and_texts(tmp_path: Any) -> None:
    logdir = str(tmp_path / "logs")
    rule = DriftRule(threshold=0.0, patience=2, methods=("gradcam",))
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=2, rules=(rule,)),
    )
    fit(tmp_path, [monitor], max_epochs=5, logger=TensorBoardLogger(logdir))
    # reference at epoch 2, armed from epoch 3, patience 2 -> fires at epoch 4
    assert [(a.epoch, a.method) for a in monitor.alerts] == [(4, "gradcam")]
    acc = read_events(logdir)
    (text,) = acc.Tensors("xai/alerts/text_summary")
    # a score over its threshold in the next evaluations without an alert is the cooldown: the text says so
    assert "then silent for 3 evaluations, `DriftPolicy(cooldown=)`)" in text.tensor_proto.string_val[0].decode()


def test_every_n_epochs_and_early_stopping_can_monitor_drift(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        every_n_epochs=2,
        drift=DriftPolicy(warmup_epochs=0),
    )
    stopper = EarlyStopping(
        monitor="xai/gradcam/drift/rank_vs_reference/median",
        mode="min",
        patience=100,
        check_on_train_epoch_end=False,
        strict=False,
    )
    fit(tmp_path, [monitor, stopper], max_epochs=4)
    assert [h.epoch for h in monitor.history] == [1, 3]
    assert stopper.best_score is not None and torch.isfinite(stopper.best_score)


def test_callbacks_find_the_monitored_keys_at_every_validation_but_loggers_get_only_measured_points(
    tmp_path: Any,
) -> None:
    """``every_n_epochs=2``: Lightning validates after epoch 0 too, where the monitor does not explain; a strict
    ``EarlyStopping`` on a drift median and a ``ModelCheckpoint`` on the detector's score (first measured at the
    second evaluation) raised "metric not available" there, after training steps. Now both run; the logger's points
    are the evaluations' own."""
    from lightning.pytorch.loggers import CSVLogger

    drift = DriftPolicy(warmup_epochs=0)
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), every_n_epochs=2, drift=drift)
    key = "xai/gradcam/drift/rank_vs_reference/median"
    stopper = EarlyStopping(monitor=key, mode="max", patience=100)
    keeper = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="xai/gradcam/alert/score", mode="max")
    kw = {"max_epochs": 4, "logger": CSVLogger(str(tmp_path)), "enable_checkpointing": True}
    _, trainer = fit(tmp_path, [monitor, stopper, keeper], **kw)
    assert [h.epoch for h in monitor.history] == [1, 3] and trainer.current_epoch == 4  # ran to the end
    assert keeper.best_model_path and stopper.best_score is not None
    with open(os.path.join(str(trainer.log_dir), "metrics.csv")) as sheet:
        rows = list(csv.DictReader(sheet))
    assert [int(r["epoch"]) for r in rows if r.get(key)] == [1, 3]  # no point at the epochs it did not explain
    score = "xai/gradcam/alert/score"  # first measured at the second evaluation: no placeholder point before
    measured = [h.epoch for h in monitor.history if score in h.scalars]
    assert [int(r["epoch"]) for r in rows if r.get(score)] == measured == [3]


def test_a_placeholder_never_wins_a_checkpoint_and_grey_probes_hold_no_colour_score(tmp_path: Any) -> None:
    """A score before its first measurement stands as the worst value for the callbacks watching it: with
    ``mode="max"`` the detector's -1 (scores are often negative: a 0.0 placeholder was the "best" checkpoint). Grey
    images in three channels have no colour: no colour score key at all (the setup check listed one)."""
    from lightning_xai._trainer import placeholder

    x, y = loaders()[1].dataset.tensors  # type: ignore[attr-defined]
    grey = TensorDataset(x.repeat(1, 3, 1, 1), y)
    score = "xai/integrated_gradients/alert/score"
    keeper = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor=score, mode="max")
    monitor = AttributionMonitor(
        num_probes=4, methods=(IntegratedGradients(n_steps=2),), drift=DriftPolicy(warmup_epochs=0)
    )
    L.seed_everything(0, verbose=False)
    kw = trainer_kwargs(tmp_path, callbacks=[monitor, keeper], max_epochs=3, enable_checkpointing=True)
    trainer = L.Trainer(**kw)
    trainer.fit(TinyCNN(channels=3), DataLoader(grey, batch_size=8), DataLoader(grey, batch_size=8))
    measured = {h.epoch: h.scalars[score] for h in monitor.history if score in h.scalars}
    assert 0 not in measured and measured  # the score's first value comes at the second evaluation
    assert f"epoch={max(measured, key=measured.__getitem__)}-" in keeper.best_model_path
    assert not [k for k in monitor.setup_check.drift_keys if "colour" in k]
    assert (placeholder(trainer, score, score), placeholder(trainer, "xai/m/drift/rank_vs_reference/median", "k")) == (
        -1.0, 0.0
    )  # fmt: skip


def test_a_drift_placeholder_is_drawn_as_0_but_never_wins_a_min_checkpoint(tmp_path: Any) -> None:
    """Before a previous evaluation exists, ``rank_vs_previous`` is logged as 0.0 (the curves' documented first
    point), but ``callback_metrics`` holds the worst value for the callbacks watching it: with ``mode="min"`` the
    unmeasured 0.0 was the best checkpoint (and stopped an EarlyStopping)."""
    from lightning.pytorch.loggers import CSVLogger

    key = "xai/gradcam/drift/rank_vs_previous/median"
    keeper = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor=key, mode="min")
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0))
    kw = {"max_epochs": 3, "logger": CSVLogger(str(tmp_path)), "enable_checkpointing": True}
    _, trainer = fit(tmp_path, [monitor, keeper], **kw)
    measured = {h.epoch: h.scalars[key] for h in monitor.history if key in h.scalars}
    assert 0 not in measured and f"epoch={min(measured, key=measured.__getitem__)}-" in keeper.best_model_path
    with open(os.path.join(str(trainer.log_dir), "metrics.csv")) as sheet:
        logged = [float(r[key]) for r in csv.DictReader(sheet) if r.get(key)]
    assert logged[0] == 0.0 and logged[1:] == [measured[1], measured[2]]  # the placeholder is still drawn first


def test_a_stand_in_never_stops_the_run_and_reads_what_watches_it() -> None:
    """The stand-in sits at an EarlyStopping's ``divergence_threshold`` (the worst value, 2.0, was over it: the run
    stopped at epoch 0 with nothing measured); a ReduceLROnPlateau scheduler watching the key counts by its mode; a
    callback whose ``monitor`` is not a string (a numpy array) is not a watcher (comparing it crashed ``fit``)."""
    from types import SimpleNamespace

    from lightning_xai._trainer import placeholder

    key = "xai/gradcam/drift/rank_vs_reference/median"
    stop = EarlyStopping(monitor=key, mode="min", divergence_threshold=1.5)
    odd = SimpleNamespace(monitor=np.array([1, 2]), mode="min")
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([torch.zeros(1, requires_grad=True)]))
    cases = [
        ([stop, odd], [], 1.5),
        ([odd], [], 0.0),
        ([], [SimpleNamespace(monitor=key, scheduler=plateau)], 2.0),  # its default mode is "min"
        ([EarlyStopping(monitor=key, mode="max", divergence_threshold=0.1)], [], 0.1),
    ]
    for callbacks, configs, expected in cases:
        trainer = SimpleNamespace(callbacks=callbacks, lr_scheduler_configs=configs)
        assert placeholder(trainer, key, key) == expected  # type: ignore[arg-type]


def test_early_stopping_on_divergence_runs_past_the_unmeasured_epochs(tmp_path: Any) -> None:
    key = "xai/gradcam/drift/rank_vs_reference/median"
    stop = EarlyStopping(monitor=key, mode="min", divergence_threshold=1.5, patience=100)
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=1))
    _, trainer = fit(tmp_path, [monitor, stop], max_epochs=3)
    assert trainer.current_epoch == 3 and stop.stopped_epoch == 0 and len(monitor.history) == 3


def test_monitor_pickles(tmp_path: Any) -> None:
    import pickle

    monitor = AttributionMonitor(num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)))
    fit(tmp_path, [monitor], max_epochs=1)
    clone = pickle.loads(pickle.dumps(monitor))
    assert torch.equal(clone.probes.images, monitor.probes.images)


def test_probe_masks_log_localization(tmp_path: Any) -> None:
    x, y = loaders()[1].dataset.tensors  # type: ignore[attr-defined]
    images, labels = x[:4], y[:4]
    full = torch.ones(4, 12, 12, dtype=torch.bool)
    monitor = AttributionMonitor(
        probes=(images, labels), methods=("gradcam", IntegratedGradients(n_steps=4)), display=Display(probe_masks=full)
    )
    empty = AttributionMonitor(
        probes=(images, labels),
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        display=Display(probe_masks=lambda imgs, lbls: torch.zeros(len(imgs), 12, 12)),
        seed=1,
        name="empty",
    )
    _, trainer = fit(tmp_path, [monitor, empty], max_epochs=1)
    for method in ("gradcam", "integrated_gradients"):
        assert monitor.history[0].scalars[f"xai/localization/{method}/relevance_mass"] == pytest.approx(1.0)
        assert monitor.history[0].scalars[f"xai/localization/{method}/pointing_game"] == pytest.approx(1.0)
        assert empty.history[0].scalars[f"xai/localization/{method}/relevance_mass"] == 0.0
        assert empty.history[0].scalars[f"xai/localization/{method}/pointing_game"] == 0.0
    bad = AttributionMonitor(probes=(images, labels), display=Display(probe_masks=torch.ones(3, 12, 12)))
    with pytest.raises(ValueError, match="`Display.probe_masks` has shape"):
        fit(tmp_path / "bad", [bad], max_epochs=1)


def test_a_monitor_reused_for_another_model_trained_afresh_starts_a_run_of_its_own(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A k-fold loop with one monitor: fold 1 kept fold 0's probes (in fold 1's training data), measured its first
    maps against fold 0's model as "previous" and "reference" and mixed both runs in ``history``, silently. A new
    model trained from its first step without a checkpoint now starts a run of its own, said once; the same model
    fit again by a new Trainer continues its run, as before."""
    import lightning_xai.monitor as monitor_module

    said: list[str] = []
    monkeypatch.setattr(monitor_module, "rank_zero_info", said.append, raising=False)
    x, y = loaders(n_train=48, n_val=48)[1].dataset.tensors  # type: ignore[attr-defined]
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0))
    seen = []
    for fold in range(2):
        val = slice(fold * 24, (fold + 1) * 24)
        train = torch.ones(48, dtype=torch.bool)
        train[val] = False
        model = TinyCNN()
        trainer = L.Trainer(**trainer_kwargs(tmp_path / str(fold), callbacks=[monitor], max_epochs=2))
        trainer.fit(
            model,
            DataLoader(TensorDataset(x[train], y[train]), batch_size=8),
            DataLoader(TensorDataset(x[val], y[val]), batch_size=8),
        )
        assert monitor.probes is not None
        assert all(any(torch.equal(p, v) for v in x[val]) for p in monitor.probes.images)  # this fold's own
        seen.append([(h.epoch, h.scalars.get("xai/gradcam/drift/rank_vs_reference/median")) for h in monitor.history])
    assert [[epoch for epoch, _ in run] for run in seen] == [[0, 1], [0, 1]]
    assert seen[1][0][1] == 0.0  # its first maps are its own reference, not compared with fold 0's model
    assert len([m for m in said if "starts a run of its own" in m]) == 1
    again = L.Trainer(**trainer_kwargs(tmp_path / "again", callbacks=[monitor], max_epochs=1))
    again.fit(
        model, DataLoader(TensorDataset(x, y), batch_size=8), DataLoader(TensorDataset(x[:24], y[:24]), batch_size=8)
    )
    assert [h.epoch for h in monitor.history] == [0, 1, 0] and len(said) == 1  # the same model: its run goes on


def test_a_new_run_is_told_from_a_resume_and_from_a_tuners_own_restore(tmp_path: Any) -> None:
    """A tuner callback (``BatchSizeFinder``) restores its own checkpoint before the monitor's ``on_fit_start``,
    leaving ``trainer.ckpt_path`` set: a k-fold loop with one then kept fold 0's run (review). A fit resumed with
    ``ckpt_path`` continues the run, with whichever model object it restores into."""
    from lightning.pytorch.callbacks import BatchSizeFinder

    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0))

    class Data(L.LightningDataModule):
        def __init__(self, seed: int) -> None:
            super().__init__()
            self.batch_size, (self.train, self.val) = 8, loaders(n_train=32, n_val=16)
            x, y = self.val.dataset.tensors  # type: ignore[attr-defined]
            self.val = DataLoader(TensorDataset(x + seed, y), batch_size=8)  # each fold its own validation images

        def train_dataloader(self) -> DataLoader:
            return DataLoader(self.train.dataset, batch_size=self.batch_size)

        def val_dataloader(self) -> DataLoader:
            return self.val

    for fold in range(2):
        finder = BatchSizeFinder(max_trials=1, steps_per_trial=1)
        kw = trainer_kwargs(tmp_path / str(fold), callbacks=[monitor, finder], max_epochs=2, enable_checkpointing=True)
        data = Data(fold)
        L.Trainer(**kw).fit(TinyCNN(), datamodule=data)
        assert monitor.probes is not None and [h.epoch for h in monitor.history] == [0, 1]
        assert all(any(torch.equal(p, v) for v in data.val.dataset.tensors[0]) for p in monitor.probes.images)
    (checkpoint,) = glob.glob(str(tmp_path / "1" / "**" / "*.ckpt"), recursive=True)
    kw = trainer_kwargs(tmp_path / "resumed", callbacks=[monitor], max_epochs=3)
    L.Trainer(**kw).fit(TinyCNN(), datamodule=Data(1), ckpt_path=checkpoint)  # another object, the same run
    assert [h.epoch for h in monitor.history] == [0, 1, 2]
