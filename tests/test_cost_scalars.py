"""The monitor's scalars: the keys a user monitors (drift medians, detector scores) reach ``callback_metrics`` (in a
fit directly, in ``validate``/``test`` and DDP through ``pl_module.log``); the scalars go straight to every logger
(TensorBoard, CSV, W&B offline, MLflow) at Lightning's step, on the background writer where the logger allows,
without costing ``pl_module.log``'s 0.27 ms a key."""

from __future__ import annotations

import csv
import glob
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import AttributionMonitor, DriftPolicy
from lightning_xai._trainer import log_epoch_scalars, monitored, with_placeholders

sys.path.insert(0, str(Path(__file__).parent))
import test_loggers  # noqa: E402
from conftest import TinyCNN, have, loaders, trainer_kwargs  # noqa: E402

EPOCHS = test_loggers.EPOCHS  # the shared run's
LAST_TWO = [4 * EPOCHS - 5, 4 * EPOCHS - 1]  # Lightning's steps at the last two validations (4 batches an epoch)
MONITORED = "xai/gradcam/drift/rank_vs_previous/median"
MOVED = ("xai/gradcam/drift/rank_vs_previous/share", "xai/gradcam/seconds", "xai/seconds")


def test_only_drift_medians_and_detector_scores_are_monitored() -> None:
    for key in (MONITORED, "xai/ig/drift/topk_vs_reference/median", "xai/ig/alert/score", "xai/ig/alert/colour/score"):
        assert monitored(key), key
    for key in (*MOVED, "xai/ig/n_steps", "xai/localization/ig/relevance_mass", "xai/ig/alert/confirmation"):
        assert not monitored(key), key
    keys = ["xai/g/drift/rank_vs_previous/median", "xai/g/drift/rank_vs_previous/share"]
    assert with_placeholders({"xai/g/seconds": 0.1}, keys, [], {}) == {keys[0]: 0.0, "xai/g/seconds": 0.1}


class _Writer:
    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def submit(self, job: Any) -> None:
        self.jobs.append(job)


class _Spy(Logger):
    """A logger of no known kind: it gets the scalars on the training thread."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: list[tuple[dict[str, float], int | None]] = []

    @property
    def name(self) -> str:
        return "spy"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logged.append((dict(metrics), step))


def test_the_other_keys_go_to_the_loggers_at_lightnings_step_queued_where_the_logger_allows(tmp_path: Path) -> None:
    spy, board, prefixed = _Spy(), TensorBoardLogger(str(tmp_path)), TensorBoardLogger(str(tmp_path), prefix="p")
    logged: dict[str, Any] = {}

    class Module(TinyCNN):
        def log_dict(self, dictionary: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
            logged.update(dictionary)

    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=[spy, board, prefixed]))
    trainer.fit_loop.epoch_loop._batches_that_stepped = 7
    writer = _Writer()
    scalars = {MONITORED: 0.25, "xai/gradcam/seconds": 0.5, "xai/seconds": 1.0}
    log_epoch_scalars(trainer, Module(), scalars, name="run", writer=writer)
    assert logged == {"xai/run/gradcam/drift/rank_vs_previous/median": 0.25}
    rest = {"xai/run/gradcam/seconds": 0.5, "xai/run/seconds": 1.0, "epoch": 0}
    assert spy.logged == [(rest, 7)]  # a logger of no known kind: at once, on the training thread
    assert len(writer.jobs) == 2  # TensorBoard: on the writer (one event; through `log_metrics` with a prefix)
    for job, logger, prefix in zip(writer.jobs, (board, prefixed), ("", "p-"), strict=True):
        job()
        logger.experiment.flush()
        acc = EventAccumulator(logger.log_dir)
        acc.Reload()
        assert [(e.step, e.value) for e in acc.Scalars(f"{prefix}xai/run/seconds")] == [(7, 1.0)]
        assert [(e.step, e.value) for e in acc.Scalars(f"{prefix}xai/run/gradcam/seconds")] == [(7, 0.5)]
        assert f"{prefix}epoch" not in acc.Tags()["scalars"]  # Lightning's own point at the step: not twice


def test_inside_a_fit_the_monitored_keys_skip_lightnings_log_for_callback_metrics_and_the_loggers(
    tmp_path: Path,
) -> None:
    """In a fit on one process ``pl_module.log`` (0.27 ms a key) is not called: the monitored keys are put into
    ``trainer.callback_metrics`` as Lightning would (a float32 tensor of the value) and go to every logger with the
    rest, with the ``epoch`` Lightning adds; a placeholder (``direct``) reaches the loggers only."""
    from lightning.pytorch.trainer.states import TrainerFn

    spy, logged = _Spy(), []

    class Module(TinyCNN):
        def log_dict(self, dictionary: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
            logged.append(dictionary)

    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=[spy]))
    trainer.state.fn = TrainerFn.FITTING
    trainer.fit_loop.epoch_loop._batches_that_stepped, trainer.fit_loop.epoch_progress.current.completed = 9, 2
    score = "xai/gradcam/alert/score"
    scalars = {MONITORED: 0.1, score: -0.5, "xai/seconds": 1.0}
    log_epoch_scalars(trainer, Module(), scalars, writer=_Writer(), direct={score})
    assert logged == []
    assert {k: v.dtype for k, v in trainer.callback_metrics.items()} == {MONITORED: torch.float32}
    assert float(trainer.callback_metrics[MONITORED]) == pytest.approx(0.1)
    assert spy.logged == [({MONITORED: 0.1, score: -0.5, "xai/seconds": 1.0, "epoch": 2}, 9)]
    trainer.state.fn = TrainerFn.VALIDATING  # `validate` returns them: through Lightning's log
    log_epoch_scalars(trainer, Module(), {MONITORED: 0.2}, writer=_Writer())
    assert logged == [{MONITORED: 0.2}]


#: the module-scoped run of every logger (TensorBoard, CSV, W&B offline, MLflow) that tests/test_loggers.py checks
run = test_loggers.run


def test_monitored_keys_reach_callback_metrics_and_the_rest_does_not(run: dict[str, Any]) -> None:
    metrics, last = run["trainer"].callback_metrics, run["monitor"].history[-1].scalars
    assert float(metrics[MONITORED]) == pytest.approx(last[MONITORED])
    assert "xai/gradcam/alert/score" in metrics
    for key in MOVED:
        assert key in last and key not in metrics, key


def test_a_moved_key_reaches_tensorboard_at_the_step_of_the_drift_keys(run: dict[str, Any]) -> None:
    acc = EventAccumulator(run["loggers"][0].log_dir)
    acc.Reload()
    steps = [e.step for e in acc.Scalars(MONITORED)]
    assert steps == [
        4 * epoch + 3 for epoch in range(EPOCHS)
    ]  # Lightning's step at the end of each validation (a placeholder first)
    history = run["monitor"].history
    for key in MOVED:
        events = acc.Scalars(key)
        values = [h.scalars[key] for h in history if key in h.scalars]
        assert [e.step for e in events] == steps[-len(values) :], key  # the share from the 2nd evaluation on
        assert [e.value for e in events] == pytest.approx(values, rel=1e-6), key


def test_the_csv_logger_has_the_moved_keys_in_metrics_csv(run: dict[str, Any]) -> None:
    with open(Path(run["loggers"][1].log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in (*MOVED, MONITORED):
        assert sorted({int(r["step"]) for r in rows if r.get(key)})[-2:] == LAST_TWO, key


@pytest.mark.skipif(not have("mlflow"), reason="mlflow is not installed (pip install mlflow-skinny)")
def test_mlflow_has_the_moved_keys_by_step(run: dict[str, Any]) -> None:
    logger = run["loggers"][-1]
    metrics = Path(glob.glob(str(run["root"] / "mlruns" / "*" / logger.run_id))[0]) / "metrics"
    for key in (*MOVED, MONITORED):
        lines = (metrics / key).read_text().split()
        assert [int(step) for step in lines[2::3]][-2:] == LAST_TWO, key


@pytest.mark.skipif(not have("wandb"), reason="wandb is not installed (pip install wandb)")
def test_wandb_offline_run_has_the_moved_keys(run: dict[str, Any]) -> None:
    import wandb

    wandb.finish()  # the offline run's records are written by W&B's service process, soon after
    (records,) = glob.glob(str(run["root"] / "wandb" / "offline-run-*" / "*.wandb"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(k.encode() in Path(records).read_bytes() for k in MOVED):
        time.sleep(0.2)
    data = Path(records).read_bytes()
    for key in (*MOVED, MONITORED):
        assert key.encode() in data, key


def test_under_validate_the_moved_keys_share_the_step_lightning_logs_at(tmp_path: Path) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=0))
    logger = TensorBoardLogger(str(tmp_path))
    _, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=logger, callbacks=[monitor]))
    model = TinyCNN()
    trainer.validate(model, val)
    trainer.validate(model, val)
    logger.experiment.flush()
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    assert [e.step for e in acc.Scalars("xai/gradcam/seconds")] == [e.step for e in acc.Scalars("val_loss")] == [0, 0]
    assert [e.step for e in acc.Scalars(MONITORED)] == [0, 0]


def test_a_drift_median_is_logged_at_every_evaluation_before_its_reference(tmp_path: Path) -> None:
    """0.0 at each evaluation before the reference (warm-up of 2 epochs: epochs 0 and 1), not only at the first:
    the loggers show what ``callback_metrics`` holds, with no gap at epoch 1."""
    key = "xai/gradcam/drift/rank_vs_reference/median"
    logger = TensorBoardLogger(str(tmp_path), name="gap")
    monitor = AttributionMonitor(num_probes=4, methods=("gradcam",), drift=DriftPolicy(warmup_epochs=2, detector=None))
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=4, logger=logger, callbacks=[monitor]))
    trainer.fit(TinyCNN(), train, val)
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    events = acc.Scalars(key)
    steps = [e.step for e in acc.Scalars("xai/gradcam/drift/rank_vs_previous/median")]
    assert [e.step for e in events] == steps and len(steps) == 4  # every evaluation
    assert [e.value for e in events[:3]] == [0.0, 0.0, 0.0]  # epochs 0, 1 (nothing yet) and 2 (the reference)
    assert events[3].value == pytest.approx(monitor.history[3].scalars[key]) and events[3].value > 0
    assert float(trainer.callback_metrics[key]) == pytest.approx(events[3].value)
