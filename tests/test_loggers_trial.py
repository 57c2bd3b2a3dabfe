"""A new user's logger setups, each in a real tiny fit with the monitor at its defaults: what each logger ends up
holding (W&B offline, MLflow file store), where it differs from what a user of that logger expects."""

from __future__ import annotations

import glob
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch

from lightning_xai import AttributionMonitor, DriftPolicy, DriftRule

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN, have, loaders, trainer_kwargs  # noqa: E402

EPOCHS = 3


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """W&B offline and MLflow's file store, both under ``tmp_path``."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    yield tmp_path
    if have("wandb"):
        import wandb

        wandb.finish()


def _fit(root: Path, logger: Any, **overrides: Any) -> list[str]:
    """A fit of ``EPOCHS`` epochs with the monitor at its defaults but an alert forced; the warnings said."""
    monitor = AttributionMonitor(drift=DriftPolicy(rules=(DriftRule(threshold=0.0),), warmup_epochs=0))
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    kwargs: dict[str, Any] = {"max_epochs": EPOCHS, "logger": logger, "callbacks": [monitor], **overrides}
    trainer = L.Trainer(**trainer_kwargs(root, **kwargs))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        trainer.fit(TinyCNN(), train, val)
    return [str(w.message) for w in said]


@pytest.mark.skipif(not have("wandb"), reason="wandb is not installed (pip install wandb)")
def test_a_wandb_predictions_table_with_a_probe_of_no_relevance_is_logged(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe whose map holds no relevance has no drift in the table (None); W&B's Table refuses a column of numbers
    and "" ("Data row contained incompatible types"), so the table must keep None."""
    from lightning.pytorch.loggers import WandbLogger

    import lightning_xai.visualize.media as media

    real = media.blank_maps
    monkeypatch.setattr(media, "blank_maps", lambda raw: (torch.arange(len(raw)) == 0) | real(raw))  # probe 0: blank
    said = _fit(offline, WandbLogger(save_dir=str(offline), project="trial"))
    assert not [s for s in said if "logging images or tables failed" in s]
    run = glob.glob(str(offline / "wandb" / "offline-run-*"))[0]
    tables = sorted((Path(run) / "files" / "media" / "table" / "xai").glob("predictions_*.table.json"))
    assert len(tables) == EPOCHS
    data = json.loads(tables[-1].read_text())
    column = data["columns"].index("gradcam rank drift vs ref")
    assert data["data"][0][column] is None and isinstance(data["data"][1][column], float)


@pytest.mark.skipif(not have("mlflow"), reason="mlflow is not installed (pip install mlflow-skinny)")
def test_mlflow_epoch_series_is_the_same_with_and_without_the_monitor(offline: Path) -> None:
    """MLflow keeps each metric as its own series: the monitor's scalars carrying `epoch` added a second point at each
    validation step to Lightning's own `epoch` series (as TensorBoard, MLflow gets the scalars alone)."""
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.tracking import MlflowClient

    uri = f"file:{offline / 'mlruns'}"
    logger = MLFlowLogger(experiment_name="trial", tracking_uri=uri)
    _fit(offline, logger)
    client = MlflowClient(tracking_uri=uri)
    epochs = [(m.step, m.value) for m in client.get_metric_history(logger.run_id, "epoch")]
    val_loss = [m.step for m in client.get_metric_history(logger.run_id, "val_loss")]
    seconds = [m.step for m in client.get_metric_history(logger.run_id, "xai/seconds")]
    assert seconds == val_loss == [4 * e + 3 for e in range(EPOCHS)]  # the scalars at Lightning's validation steps
    assert sorted(epochs) == [(4 * e + 3, float(e)) for e in range(EPOCHS)]  # once a step, as Lightning logs it


def test_without_tensorboard_the_warning_says_where_the_sheet_is_and_only_what_is_logged(tmp_path: Path) -> None:
    """A CSVLogger-only run is told where its sheets are (the directory), and not of grids it does not log."""
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(str(tmp_path), name="csv")
    said = [s for s in _fit(tmp_path, logger, max_epochs=1) if "no TensorBoardLogger" in s]
    assert len(said) == 1
    assert f"CSVLogger (files under {Path(logger.log_dir) / 'xai'})" in said[0]
    assert "grids" not in said[0]  # Display(log_grids=False): none logged
    assert list((Path(logger.log_dir) / "xai" / "sheet").glob("*.jpg"))
