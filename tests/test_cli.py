"""LightningCLI: ``examples/monitor.yaml`` configures the monitor under ``trainer.callbacks`` (class_path/init_args:
an explainer instance in ``methods``, the settings objects ``drift``/``display``/``budget``, a DriftRule) and runs,
shortened, through ``examples/cli.py``."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightning_xai import AttributionMonitor, Budget, Display, DriftPolicy, DriftRule, GradCam, IntegratedGradients

pytest.importorskip("jsonargparse", reason="LightningCLI needs jsonargparse: pip install 'lightning_xai[cli]'")
pytest.importorskip("sklearn", reason="the example's data come from scikit-learn")

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "monitor.yaml"
RULE = DriftRule("rank", "reference", "median", 0.4, patience=2)


def test_the_example_config_runs_with_lightning_cli(tmp_path: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from examples.cli import main
    from lightning_xai.report import read_run

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
    # the YAML's settings reached the monitor: an explainer instance with its options, the three settings objects
    gradcam, ig = monitor.explainers
    assert type(gradcam) is GradCam and type(ig) is IntegratedGradients and ig.n_steps == 16
    assert isinstance(monitor.drift_policy, DriftPolicy) and monitor.drift_policy.warmup_epochs == 2
    assert monitor.drift_policy.rules == (RULE,) and monitor.drift_policy.cooldown == 3
    assert monitor.drift_policy.on_drift == "warn"
    assert isinstance(monitor.display, Display)
    assert (monitor.display.tile_size, monitor.display.colormap, monitor.media.tile_size) == (96, "viridis", 96)
    assert isinstance(monitor.budget, Budget)
    assert (monitor.budget.max_overhead, monitor.budget.max_seconds_per_epoch) == (None, 60.0)
    assert len(monitor.history) == 2 and monitor.probes is not None and len(monitor.probes) == 8
    # the logger's own event file (the dashboard's summary series lie in its sub-runs xai-score, ...)
    (events,) = [e for e in glob.glob(str(logs / "**" / "events.out.tfevents.*"), recursive=True) if "xai-" not in e]
    run_dir = os.path.dirname(events)
    acc = EventAccumulator(run_dir, size_guidance={"images": 0})
    acc.Reload()
    assert len(acc.Images("xai/sheet")) == 2
    # what the run itself wrote as its settings (xai/settings, read back as the report reads it)
    settings = read_run(run_dir).settings
    assert settings["methods"]["integrated_gradients"]["n_steps"] == 16
    assert (settings["warmup_epochs"], settings["tile_size"], settings["colormap"]) == (2, 96, "viridis")
    assert settings["max_seconds_per_epoch"] == 60.0 and settings["rules"][0]["patience"] == 2
    # LightningCLI saves the config it ran: the settings objects as mappings, the instance by class_path
    saved = yaml.safe_load(Path(run_dir, "config.yaml").read_text())
    (callback,) = saved["trainer"]["callbacks"]
    assert callback["class_path"] == "lightning_xai.AttributionMonitor"
    init = callback["init_args"]
    assert init["drift"]["warmup_epochs"] == 2 and init["drift"]["rules"][0]["threshold"] == 0.4
    assert init["display"]["tile_size"] == 96 and init["budget"]["max_seconds_per_epoch"] == 60.0
    assert init["methods"][0] == "gradcam"
    assert init["methods"][1]["class_path"] == "lightning_xai.IntegratedGradients"
    assert init["methods"][1]["init_args"]["n_steps"] == 16


def test_the_example_config_names_the_monitor_under_trainer_callbacks() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    (callback,) = config["trainer"]["callbacks"]
    assert callback["class_path"] == "lightning_xai.AttributionMonitor"
    init = callback["init_args"]
    assert init["methods"][0] == "gradcam"
    assert init["methods"][1] == {"class_path": "lightning_xai.IntegratedGradients", "init_args": {"n_steps": 16}}
    assert DriftRule(**init["drift"]["rules"][0]) == RULE
    policy = DriftPolicy(**{k: v for k, v in init["drift"].items() if k != "rules"})
    assert policy.warmup_epochs == 2
    assert Display(**init["display"]).tile_size == 96 and Budget(**init["budget"]).max_seconds_per_epoch == 60
    # every key under init_args is one of the constructor's 12 parameters (no old argument name survives)
    assert set(init) <= set(AttributionMonitor.__init__.__code__.co_varnames[1:13])


def test_the_other_yaml_forms_the_docs_show_parse(tmp_path: Any) -> None:
    """docs/lightning_cli.md: instances of other methods, ``class_path`` for a settings object, a ShiftDetector with
    its own settings, ``detector: null``; parsed by LightningCLI (``run=False``), no fit."""
    from lightning.pytorch.cli import LightningCLI

    from lightning_xai import Occlusion, ShiftDetector

    config = yaml.safe_load(CONFIG.read_text())
    config["trainer"]["logger"] = False
    init = config["trainer"]["callbacks"][0]["init_args"]
    init["methods"] = [
        {"class_path": "lightning_xai.GradCam", "init_args": {"layer": "features.3"}},
        {"class_path": "lightning_xai.Occlusion", "init_args": {"window": 8, "stride": 4}},
    ]
    detector = {"class_path": "lightning_xai.ShiftDetector", "init_args": {"ratio": 4.0}}
    init["drift"] = {"class_path": "lightning_xai.DriftPolicy", "init_args": {"detector": detector, "topk": 0.2}}
    init["display"] = {"quality": ["entropy"]}
    init["budget"] = {"max_overhead": 0.05}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = LightningCLI(args=["--config", str(path)], run=False)
    (monitor,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, AttributionMonitor)]
    gradcam, occlusion = monitor.explainers
    assert gradcam.layer == "features.3" and type(occlusion) is Occlusion
    assert (occlusion.window, occlusion.stride) == (8, 4)
    assert isinstance(monitor.detector, ShiftDetector) and monitor.detector.ratio == 4.0
    assert monitor.drift_policy.topk == 0.2 and monitor.drift_policy.warmup_epochs == 2  # a default field
    assert monitor.display.quality == ("entropy",) and monitor.display.tile_size == 128
    assert monitor.budget.max_overhead == 0.05 and monitor.budget.max_seconds_per_epoch is None

    init["drift"] = {"detector": None}
    path.write_text(yaml.safe_dump(config))
    cli = LightningCLI(args=["--config", str(path)], run=False)
    (monitor,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, AttributionMonitor)]
    assert monitor.detector is None and monitor.drift_policy.rules == ()


def _yaml_blocks(name: str) -> list[Any]:
    import re

    text = (CONFIG.parents[1] / "docs" / name).read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S)]


def test_the_yaml_in_the_docs_is_the_example_or_parses(tmp_path: Any) -> None:
    """docs/lightning_cli.md shows examples/monitor.yaml (the monitor's init_args the same, the target left out);
    the fragment in docs/migration.md parses into the settings it names."""
    from lightning.pytorch.cli import LightningCLI

    config = yaml.safe_load(CONFIG.read_text())
    ((shown,),) = [block["trainer"]["callbacks"] for block in _yaml_blocks("lightning_cli.md")]
    example = config["trainer"]["callbacks"][0]["init_args"]
    assert shown["init_args"] == {k: v for k, v in example.items() if k not in ("target", "budget")} | {
        "budget": {"max_seconds_per_epoch": example["budget"]["max_seconds_per_epoch"]}
    }

    (fragment,) = _yaml_blocks("migration.md")
    config["trainer"]["logger"] = False
    config["trainer"]["callbacks"][0]["init_args"] = {"num_probes": 8, **fragment}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = LightningCLI(args=["--config", str(path)], run=False)
    (monitor,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, AttributionMonitor)]
    assert [e.name for e in monitor.explainers] == ["gradcam", "integrated_gradients"]
    assert monitor.explainers[1].n_steps == 16
    policy = monitor.drift_policy
    assert (policy.warmup_epochs, policy.on_drift, policy.cooldown) == (1, "stop", 2)
    assert monitor.display.tile_size == 64 and monitor.budget.max_overhead == 0.05
