"""The monitor's scalars: the keys a user monitors (drift medians, detector scores) go through ``pl_module.log`` into
``callback_metrics``; the rest go straight to every logger (TensorBoard, CSV, W&B offline, MLflow) at the same step,
on the background writer where the logger allows, without costing ``pl_module.log``'s 0.2 ms a key."""

from __future__ import annotations

import csv
import glob
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import AttributionMonitor, DriftPolicy, DriftRule, IntegratedGradients
from lightning_xai._trainer import log_epoch_scalars, monitored, with_placeholders

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN, loaders, trainer_kwargs  # noqa: E402

EPOCHS = 3
MONITORED = "xai/gradcam/drift/rank_vs_previous/median"
MOVED = ("xai/gradcam/drift/rank_vs_previous/share", "xai/gradcam/seconds", "xai/seconds")


def _have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001 - any import failure means "not installed here"
        return False


def test_only_drift_medians_and_detector_scores_are_monitored() -> None:
    for key in (MONITORED, "xai/ig/drift/topk_vs_reference/median", "xai/ig/alert/score", "xai/ig/alert/colour/score"):
        assert monitored(key), key
    for key in (*MOVED, "xai/ig/n_steps", "xai/localization/ig/relevance_mass", "xai/ig/alert/confirmation"):
        assert not monitored(key), key
    keys = ["xai/g/drift/rank_vs_previous/median", "xai/g/drift/rank_vs_previous/share"]
    assert with_placeholders({"xai/g/seconds": 0.1}, keys, {}, None) == {keys[0]: 0.0, "xai/g/seconds": 0.1}


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
    rest = {"xai/run/gradcam/seconds": 0.5, "xai/run/seconds": 1.0}
    assert spy.logged == [(rest, 7)]  # a logger of no known kind: at once, on the training thread
    assert len(writer.jobs) == 2  # TensorBoard: on the writer (one event; through `log_metrics` with a prefix)
    for job, logger, prefix in zip(writer.jobs, (board, prefixed), ("", "p-"), strict=True):
        job()
        logger.experiment.flush()
        acc = EventAccumulator(logger.log_dir)
        acc.Reload()
        assert [(e.step, e.value) for e in acc.Scalars(f"{prefix}xai/run/seconds")] == [(7, 1.0)]
        assert [(e.step, e.value) for e in acc.Scalars(f"{prefix}xai/run/gradcam/seconds")] == [(7, 0.5)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("scalars")
    saved = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_SILENT", "MLFLOW_ALLOW_FILE_STORE", "WANDB_DIR")}
    os.environ.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_ALLOW_FILE_STORE": "true"})
    os.environ["WANDB_DIR"] = str(root)
    loggers: list[Logger] = [TensorBoardLogger(str(root), name="tb"), CSVLogger(str(root), name="csv")]
    if _have("wandb"):
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(save_dir=str(root), offline=True, project="xai-test"))
    if _have("mlflow"):
        from lightning.pytorch.loggers import MLFlowLogger

        loggers.append(MLFlowLogger(experiment_name="xai-test", tracking_uri=f"file:{root / 'mlruns'}"))
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=1, rules=(DriftRule(threshold=0.0),), on_drift=lambda alert: None),
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(root, max_epochs=EPOCHS, logger=loggers, callbacks=[monitor]))
    try:
        trainer.fit(TinyCNN(), train, val)
        yield {"root": root, "loggers": loggers, "monitor": monitor, "trainer": trainer}
    finally:
        if _have("wandb"):
            import wandb

            wandb.finish()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
    assert steps == [3, 7, 11]  # Lightning's step at the end of each validation (a placeholder first)
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
        assert sorted({int(r["step"]) for r in rows if r.get(key)})[-2:] == [7, 11], key


@pytest.mark.skipif(not _have("mlflow"), reason="mlflow is not installed (pip install mlflow-skinny)")
def test_mlflow_has_the_moved_keys_by_step(run: dict[str, Any]) -> None:
    logger = run["loggers"][-1]
    metrics = Path(glob.glob(str(run["root"] / "mlruns" / "*" / logger.run_id))[0]) / "metrics"
    for key in (*MOVED, MONITORED):
        lines = (metrics / key).read_text().split()
        assert [int(step) for step in lines[2::3]][-2:] == [7, 11], key


@pytest.mark.skipif(not _have("wandb"), reason="wandb is not installed (pip install wandb)")
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
