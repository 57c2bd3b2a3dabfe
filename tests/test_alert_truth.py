"""End to end on a tiny subset of the alert-truth suite (benchmarks/alert_truth): the recording and the behavioural
truth, and the default detector as a regression guard: the texture shortcut is caught, the benign run is quiet, and
the replay reproduces the live alerts."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.alert_truth.analysis import behavioural_onset, load_records
from benchmarks.alert_truth.data import CUES, DigitData, PositionMark, TrainSet
from benchmarks.alert_truth.replay import (
    FixedRankRule,
    ShiftDetectorReplay,
    check_against_live,
    maps_by_epoch,
    replay,
)
from benchmarks.alert_truth.report import report
from benchmarks.alert_truth.scenarios import field, make_config, run
from lightning_xai.functional import spearman_distance

SMALL = {"n_train": 384, "n_val": 120}


def test_cues_spell_distinct_classes_and_masks_cover_the_cue() -> None:
    data = DigitData.make("position_mark", "gray32", seed=0, n_train=10, n_val=100)
    spots = {tuple(s) for s in PositionMark().spots.tolist()}
    assert len(spots) == 10  # ten distinct positions
    for cue in CUES:
        data = DigitData.make(cue, "rgb64", seed=0, n_train=10, n_val=100)
        images, labels, masks = data.probes()
        assert images.shape == (10, 3, 64, 64) and labels.tolist() == list(range(10))
        if masks is not None:
            assert masks.shape == (10, 64, 64) and masks.dtype == torch.bool
            assert bool(masks.flatten(1).any(1).all())
        blank = data.cue.stamp(torch.zeros(10, 1, 32, 32), torch.arange(10))
        assert len({tuple(b.flatten().tolist()) for b in blank}) == 10  # every class has its own cue


def test_train_set_switches_to_the_labels_cue_with_content_noise() -> None:
    data = DigitData.make("corner_patch", "gray32", seed=1, n_train=200, n_val=20)
    train = TrainSet(data)
    assert float((train.codes == train.labels).float().mean()) < 0.3
    train.set_data(predictive=True, content_noise=0.5)
    assert bool((train.codes == train.labels).all())
    assert float((train.content != torch.arange(200)).float().mean()) == pytest.approx(0.5)
    noisy = train.content != torch.arange(200)
    assert bool((data.train_labels[train.content[noisy]] != train.labels[noisy]).all())


def test_history_field_accepts_dicts_and_records() -> None:
    class Rec:
        epoch = 3

    assert field({"epoch": 3}, "epoch") == field(Rec(), "epoch") == 3
    assert field(Rec(), "scalars", {}) == {}


@pytest.mark.slow
def test_tiny_suite_records_maps_and_behavioural_truth(tmp_path) -> None:
    shortcut = make_config("texture", "cnn", 0, epochs=8, change_epoch=5, **SMALL)
    benign = make_config("lr_drop", "cnn", 0, epochs=7, change_epoch=4, **SMALL)
    assert shortcut.onset_epoch == 5 and benign.onset_epoch is None and benign.cue == "corner_patch"
    for config in (shortcut, benign):
        run(config, tmp_path, threads=None)
    records = {r["config"]["scenario"]: r for r in load_records(tmp_path)}
    assert set(records) == {"texture", "lr_drop"}

    for name, rec in records.items():
        config = shortcut if name == "texture" else benign
        evals = rec["evaluations"]
        assert [e["epoch"] for e in evals] == list(range(config.epochs))
        for e in evals:  # a map of every method at every evaluation
            assert e["evaluated"]
            assert set(e["maps"]) == {"gradcam", "integrated_gradients"}
            assert e["maps"]["gradcam"].shape == (10, 8, 8)
            assert e["maps"]["integrated_gradients"].shape == (10, 32, 32)
            assert all(bool(torch.isfinite(m).all()) for m in e["maps"].values())
            assert 0.0 <= e["cue_rate"] <= 1.0 and 0.0 <= e["val_acc"] <= 1.0
        assert rec["probes"]["images"].shape == (10, 1, 32, 32)
        assert rec["probes"]["labels"].tolist() == list(range(10))
        for alert in rec["alerts"]:
            assert {"epoch", "method", "value", "threshold", "message"} <= set(alert)
        # the recorded maps are the ones the monitor measured: its logged drift vs the reference is reproduced
        reference = {m: t for m, t in evals[rec["warmup_epochs"]]["maps"].items()}
        for e in evals[rec["warmup_epochs"] + 1 :]:
            for method, current in e["maps"].items():
                key = f"xai/{method}/drift/rank_vs_reference/median"
                if key in e["scalars"]:
                    again = float(torch.quantile(spearman_distance(current, reference[method]).double(), 0.5))
                    assert math.isclose(again, e["scalars"][key], abs_tol=1e-5)

    masks = records["lr_drop"]["probes"]["masks"]  # seed 0's benign cue is the corner patch: localised
    assert masks is not None and masks.shape == (10, 32, 32) and int(masks[0].sum()) == 16
    assert records["texture"]["probes"]["masks"] is None

    # behavioural truth: the shortcut run reads the cue after the onset, the benign run never does
    assert behavioural_onset(records["texture"]) is not None
    assert max(e["cue_rate"] for e in records["texture"]["evaluations"] if e["epoch"] >= 5) > 0.5
    assert max(e["cue_rate"] for e in records["lr_drop"]["evaluations"]) < 0.3
    assert behavioural_onset(records["lr_drop"]) is None

    # the default detector: the shortcut is caught after its onset (a candidate, then the confirmation), nothing
    # before it, nothing in the benign run; the replay of the recorded maps gives the same alerts
    texture_alerts = sorted({a["epoch"] for a in records["texture"]["alerts"]})
    assert texture_alerts and min(texture_alerts) in (6, 7), texture_alerts
    assert records["lr_drop"]["alerts"] == []
    replayed = replay(list(records.values()), ShiftDetectorReplay())
    assert check_against_live(list(records.values()), replayed) == []

    text, results = report(list(records.values()))
    assert "SUMMARY" in text and len(results) == 2
    maps, epochs = maps_by_epoch(records["texture"])
    assert epochs == list(range(8)) and len(maps) == 8
    replayed = replay(list(records.values()), FixedRankRule())
    assert set(replayed) == {r["name"] for r in records.values()}
