"""LightningCLI: ``examples/monitor.yaml`` configures the monitor under ``trainer.callbacks`` (class_path/init_args,
methods, a DriftRule) and runs, shortened, through ``examples/cli.py``."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightning_xai import AttributionMonitor, DriftRule

pytest.importorskip("jsonargparse", reason="LightningCLI needs jsonargparse: pip install 'lightning_xai[cli]'")
pytest.importorskip("sklearn", reason="the example's data come from scikit-learn")

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "monitor.yaml"


def test_the_example_config_runs_with_lightning_cli(tmp_path: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from examples.cli import main

    logs = tmp_path / "logs"
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIG),
            f"--trainer.logger.init_args.save_dir={logs}",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=4",
            "--trainer.limit_val_batches=1",
        ]
    )
    (monitor,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, AttributionMonitor)]
    assert [e.name for e in monitor.explainers] == ["gradcam", "integrated_gradients"]
    assert monitor.tracker.rules == [DriftRule("rank", "reference", "median", 0.4, patience=2)]
    assert monitor.media.tile_size == 128 and monitor.drift.warmup_epochs == 2
    assert len(monitor.history) == 2 and monitor.probes is not None and len(monitor.probes) == 8
    # the logger's own event file (the dashboard's summary series lie in its sub-runs xai-score, ...)
    (events,) = [e for e in glob.glob(str(logs / "**" / "events.out.tfevents.*"), recursive=True) if "xai-" not in e]
    acc = EventAccumulator(os.path.dirname(events), size_guidance={"images": 0})
    acc.Reload()
    assert len(acc.Images("xai/sheet")) == 2
    saved = yaml.safe_load(Path(os.path.dirname(events), "config.yaml").read_text())
    (callback,) = saved["trainer"]["callbacks"]
    assert callback["class_path"] == "lightning_xai.AttributionMonitor"
    assert callback["init_args"]["drift_rules"][0]["threshold"] == 0.4


def test_the_example_config_names_the_monitor_under_trainer_callbacks() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    (callback,) = config["trainer"]["callbacks"]
    assert callback["class_path"] == "lightning_xai.AttributionMonitor"
    assert callback["init_args"]["methods"] == ["gradcam", "integrated_gradients"]
    assert DriftRule(**callback["init_args"]["drift_rules"][0]).key == "rank_vs_reference/median"
