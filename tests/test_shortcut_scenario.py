"""The shortcut scenario used by the demo and the detection benchmark."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch

from examples.shortcut.scenario import DigitsCNN, ShortcutConfig, probe_indices, run_shortcut_scenario


def test_probe_indices_one_per_class_deterministic() -> None:
    labels = torch.arange(50) % 10
    first = probe_indices(labels, 2, seed=0)
    assert torch.equal(first, probe_indices(labels, 2, seed=0))
    assert sorted(labels[first].tolist()) == sorted(list(range(10)) * 2)


def test_digits_cnn_gradcam_layer_is_the_last_feature_map() -> None:
    from lightning_xai.explain import GradCam

    model = DigitsCNN().eval()
    cam = GradCam()
    cam.setup(model, model, torch.rand(1, 1, 32, 32))
    assert cam.layer_name == "features"


@pytest.mark.slow
def test_scenario_records_reliance_and_localization() -> None:
    records, monitor = run_shortcut_scenario(ShortcutConfig(seed=0, epochs=2, onset_epoch=1))
    assert [r.epoch for r in records] == [0, 1]
    assert len(monitor.probes) == 10 and monitor.masks is not None
    for r in records:
        assert 0.0 <= r.decoy_rate <= 1.0 and 0.0 <= r.clean_acc <= 1.0
        assert 0.0 <= r.scalars["xai/localization/gradcam/relevance_mass"] <= 1.0
        assert 0.0 <= r.scalars["xai/localization/integrated_gradients/pointing_game"] <= 1.0
    # a mismatched decoy never equals the label, so the two rates cannot sum above 1
    assert all(r.mismatched_acc + r.decoy_rate <= 1.0 + 1e-6 for r in records)


@pytest.mark.slow
def test_the_demo_writes_a_new_version_per_run_and_prints_the_samples_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.shortcut_detection import main
    from lightning_xai.report import read_logdir

    logdir = tmp_path / "shortcut"
    threads, level = torch.get_num_threads(), logging.getLogger("lightning.pytorch").level
    try:
        with warnings.catch_warnings():  # the demo quiets Lightning's warnings and uses one thread
            for epochs in ("2", "1"):
                main(["--logdir", str(logdir), "--epochs", epochs, "--onset", "1"])
    finally:
        torch.set_num_threads(threads)
        logging.getLogger("lightning.pytorch").setLevel(level)
    out = capsys.readouterr().out
    assert sorted(p.name for p in logdir.iterdir()) == ["version_0", "version_1"]
    assert out.count("--samples_per_plugin images=1000") == 2  # every sheet, not TensorBoard's default 10
    assert f"lightning-xai report {logdir.resolve() / 'version_1'} --out report.html" in out
    runs = read_logdir(str(logdir))
    assert [(r.label, len(r.sheets)) for r in runs] == [("version_0", 2), ("version_1", 1)]  # not mixed
