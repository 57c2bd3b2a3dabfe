"""The default detector (ShiftDetector), the alerts it builds, fixed rules, and what survives a resume."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_xai import AttributionMonitor, DriftPolicy, DriftRule, IntegratedGradients
from lightning_xai.drift.alerts import AlertTracker
from lightning_xai.drift.detector import Detection, ShiftDetector
from lightning_xai.drift.tracker import DriftResult, DriftTracker
from lightning_xai.functional.shift import novel_relevance, relevance_distribution
from lightning_xai.visualize.display import to_display_images

# ------------------------------------------------------------------------------------------ pure functions


def test_relevance_distribution_pools_normalises_and_handles_zero_maps() -> None:
    maps = torch.zeros(2, 32, 32)
    maps[0, :4, :4] = -3.0  # sign ignored
    dist = relevance_distribution(maps, cells=8)
    assert dist.shape == (2, 8, 8)
    assert dist[0, 0, 0].item() == pytest.approx(1.0) and dist[0].sum().item() == pytest.approx(1.0)
    assert torch.allclose(dist[1], torch.full((8, 8), 1 / 64, dtype=dist.dtype))  # all-zero: uniform
    small = relevance_distribution(torch.rand(1, 4, 4), cells=8)
    assert small.shape == (1, 4, 4)  # never upsampled


def test_novel_relevance_separates_sharpening_from_moving_elsewhere() -> None:
    before = torch.zeros(1, 8, 8)
    before[0, 2:6, 2:6] = 1.0
    before[0] += 0.05
    sharpened = torch.zeros(1, 8, 8)
    sharpened[0, 3:5, 3:5] = 1.0
    moved = before.clone()
    moved[0, 0, 7] = 8.0  # a quiet corner takes relevance
    p, s, m = (relevance_distribution(x) for x in (before, sharpened, moved))
    assert novel_relevance(s, p).item() < 0 < novel_relevance(m, p).item()


# ---------------------------------------------------------------------------------------------- detector


def _object_maps(n: int, jitter: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    maps = torch.zeros(n, 16, 16)
    maps[:, 5:11, 5:11] = 1.0
    return maps + jitter * torch.rand(n, 16, 16, generator=g)


def test_detector_calibrates_then_alerts_on_a_move_and_says_where() -> None:
    det = ShiftDetector()
    decisions = [det.update("m", _object_maps(6, 0.3, s), (64, 64), armed=s >= 2) for s in range(6)]
    assert decisions[0] is None  # no previous map yet
    assert all(d is not None and d.threshold is None for d in decisions[1:4])  # warm-up, then calibration
    assert all(d is not None and not d.fired for d in decisions[1:])
    shortcut = _object_maps(6, 0.3, 99)
    shortcut[:, 0:2, 14:16] = 12.0  # relevance moves to the top-right corner
    first = det.update("m", shortcut, (64, 64), armed=True)
    assert first is not None and first.candidate and not first.fired and first.threshold is not None
    assert first.score >= first.threshold  # a candidate: the next evaluation confirms it if the relevance stays
    stays = _object_maps(6, 0.3, 100)
    stays[:, 0:2, 14:16] = 12.0
    d = det.update("m", stays, (64, 64), armed=True)
    assert d is not None and d.fired and d.threshold is not None and d.noise is not None
    assert d.threshold >= first.threshold  # the two-evaluation test: at least the candidate's threshold
    assert d.confirmation == (d.score, d.threshold)
    state = det.state_dict()["m"]
    assert len(state["scores2"]) >= 1  # calibrated on the run's own movements over two evaluations
    assert d.score >= d.threshold > d.noise
    top, left, bottom, right = d.region  # the cue: 2 of 16 cells = input pixels 0-7 (one pixel of bilinear blur)
    assert top == 0 and bottom <= 8 and left >= 55 and right == 63
    assert d.region_share == 1.0 and d.probe_indices == tuple(range(6))
    assert [r.box for r in d.regions] == [(top, left, bottom + 1, right + 1)]  # unlabeled: one cluster of probes
    assert d.regions[0].label == "probes 0,1,2,3,4,5" and d.regions[0].place == "top-right"
    assert d.evidence is not None and d.evidence.after.shape == (6, 64, 64)


def test_detector_does_not_calibrate_on_its_alert_and_keeps_quiet_in_cooldown() -> None:
    det = ShiftDetector()
    for s in range(5):
        d = det.update("m", _object_maps(4, 0.05, s), (16, 16), armed=True, cooldown=2)
        assert d is None or not d.fired
    scores_before = list(det.state_dict()["m"]["scores"])
    moved = _object_maps(4, 0.05, 50)
    moved[:, 0, 0] = 40.0
    assert det.update("m", moved, (16, 16), armed=True, cooldown=2).candidate
    moved = _object_maps(4, 0.05, 52)
    moved[:, 0, 0] = 40.0
    assert det.update("m", moved, (16, 16), armed=True, cooldown=2).fired
    assert det.state_dict()["m"]["cooldown_left"] == 2  # the cooldown of the call
    back = _object_maps(4, 0.05, 51)
    assert not det.update("m", back, (16, 16), armed=True, cooldown=2).fired  # moves back: in cooldown
    assert det.state_dict()["m"]["scores"] == scores_before


def test_a_candidate_that_moves_back_is_dropped_and_not_calibrated_on() -> None:
    det = ShiftDetector()
    for s in range(5):
        det.update("m", _object_maps(6, 0.05, s), (64, 64), armed=True)
    scores_before = list(det.state_dict()["m"]["scores"])
    blip = _object_maps(6, 0.05, 60)
    blip[:, 0:2, 14:16] = 12.0
    assert det.update("m", blip, (64, 64), armed=True).candidate
    d = det.update("m", _object_maps(6, 0.05, 61), (64, 64), armed=True)  # the relevance went back
    assert d is not None and not d.fired and not d.candidate  # undoing a blip is no candidate either
    d = det.update("m", _object_maps(6, 0.05, 62), (64, 64), armed=True)
    assert d is not None and not d.fired
    assert det.state_dict()["m"]["scores"][: len(scores_before)] == scores_before
    assert all(abs(v) < 0.1 for v in det.state_dict()["m"]["scores"])  # the blip's own score is not noise


def test_detector_state_round_trips_with_a_pending_candidate() -> None:
    det = ShiftDetector()
    for s in range(4):
        det.update("m", _object_maps(6, 0.2, s), (16, 16), armed=True)
    shortcut = _object_maps(6, 0.2, 8)
    shortcut[:, 0:2, 14:16] = 12.0
    assert det.update("m", shortcut, (16, 16), armed=True).candidate
    other = ShiftDetector()
    other.load_state_dict(det.state_dict())
    shortcut[:, 0:2, 14:16] = 13.0
    a = det.update("m", shortcut, (16, 16), armed=True)
    b = other.update("m", shortcut, (16, 16), armed=True)
    assert a == b and a is not None and a.fired


@pytest.mark.parametrize("bad", [{"alpha": float("nan")}, {"calibration": -1}, {"floor": -1.0}, {"ratio": "3"}])
def test_detector_rejects_bad_settings(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="ShiftDetector"):
        ShiftDetector(**bad)


def test_alert_carries_the_evidence_and_says_it_in_one_sentence() -> None:
    det, tracker, drift = ShiftDetector(), AlertTracker([]), DriftTracker(warmup_epochs=0)
    for s in range(4):
        maps = _object_maps(4, 0.3, s)
        tracker.check(
            "gradcam", s, s, drift.update("gradcam", s, maps), det.update("gradcam", maps, (32, 32), True), 0.4
        )
    for epoch in (4, 5):  # relevance moves to the bottom-left (a candidate), and stays there (the alert)
        moved = _object_maps(4, 0.3, epoch + 3)
        moved[:, 12:16, 0:4] = 20.0
        update = drift.update("gradcam", epoch, moved)
        alerts = tracker.check("gradcam", epoch, 10 * epoch, update, det.update("gradcam", moved, (32, 32), True), 0.4)
        assert len(alerts) == (epoch == 5)
    assert tracker.alerts == alerts
    alert = alerts[0]
    assert alert.region is not None and alert.region[0] >= 16 and alert.region[1] == 0
    assert alert.noise is not None and alert.value >= alert.threshold
    assert alert.message == (
        "Attribution drift at epoch 5 (gradcam): 4/4 probes moved relevance to places all probes ignored: "
        f"probes 0,1,2,3 bottom-left (rows 24-31, cols 0-6) (mean share moved {alert.value:.1%}, threshold "
        f"{alert.threshold:.1%})."
    )  # the smallest box holding 90 % of the gain in the windows: the 4x4 block's bilinear edge (col 7) is left out
    assert alert.regions[0].windows == (24, 0, 32, 8)
    assert alert.region == (24, 0, 31, 6) and alert.region_share == 1.0 and alert.statistic == "mean"
    assert alert.to_dict()["region"] == list(alert.region)
    assert type(alert).from_dict(alert.to_dict()) == alert


# ------------------------------------------------------------------------------------------ rules, resume


def test_drift_rule_accepts_every_alias_that_methods_accepts() -> None:
    assert DriftRule(methods=("ig",)).methods == ("integrated_gradients",)
    assert DriftRule(methods=("grad_cam", "integrated_gradients")).methods == ("gradcam", "integrated_gradients")
    monitor = AttributionMonitor(methods=("ig",), drift=DriftPolicy(rules=(DriftRule(methods=("ig",)),)))
    assert monitor.alert_tracker.rules[0].methods == ("integrated_gradients",)
    with pytest.raises(ValueError, match=r"DriftRule\(methods=\('gradcma',\)\).*not among this monitor's methods"):
        AttributionMonitor(drift=DriftPolicy(rules=(DriftRule(methods=("gradcma",)),)))
    with pytest.raises(ValueError, match=r"DriftRule\(threshold=\.\.\.\)` must be a finite number, got nan"):
        DriftRule(threshold=float("nan"))


@pytest.mark.parametrize(("cooldown", "fired_at"), [(0, [0, 2, 4, 6]), (1, [0, 2, 4, 6]), (3, [0, 4]), (5, [0, 6])])
def test_the_policys_cooldown_reaches_the_alert_tracker(cooldown: int, fired_at: list[int]) -> None:
    # one cooldown for the detector and the rules: DriftPolicy(cooldown=) is the one the monitor's AlertTracker keeps
    rule = DriftRule(threshold=0.5, patience=1)
    monitor = AttributionMonitor(methods=("gradcam",), drift=DriftPolicy(rules=(rule,), cooldown=cooldown))
    series = (0.9, 0.1, 0.9, 0.1, 0.9, 0.1, 0.9)  # over the threshold every other evaluation
    fired = [i for i, v in enumerate(series) if monitor.alert_tracker.update("gradcam", {rule.key: v})]
    assert fired == fired_at


def test_an_alias_rule_fires_for_its_method(tmp_path: Any) -> None:
    rule = DriftRule(threshold=0.0, patience=1, methods=("ig",))
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=0, detector=None, rules=(rule,), cooldown=0),
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], max_epochs=2)).fit(TinyCNN(), train, val)
    assert [a.method for a in monitor.alerts] == ["integrated_gradients"]


def test_changing_rules_and_detector_between_fits_keeps_the_reference(tmp_path: Any) -> None:
    ckpt_dir = tmp_path / "ckpt"
    first = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(warmup_epochs=0)
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    L.Trainer(
        **trainer_kwargs(
            tmp_path,
            callbacks=[first, ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True)],
            max_epochs=2,
            enable_checkpointing=True,
        )
    ).fit(TinyCNN(), train, val)
    second = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        every_n_epochs=1,
        drift=DriftPolicy(
            warmup_epochs=1, detector=ShiftDetector(ratio=5.0), rules=(DriftRule(threshold=0.9, metric="topk"),)
        ),
    )
    assert second.state_key == first.state_key
    L.Trainer(**trainer_kwargs(tmp_path, callbacks=[second], max_epochs=3)).fit(
        TinyCNN(), train, val, ckpt_path=str(ckpt_dir / "last.ckpt")
    )
    assert (
        second.drift_tracker.reference_epochs
        == first.drift_tracker.reference_epochs
        == {"gradcam": 0, "integrated_gradients": 0}
    )
    assert torch.equal(second.drift_tracker.reference["gradcam"], first.drift_tracker.reference["gradcam"])
    assert [h.epoch for h in second.history] == [0, 1, 2]


def test_ig_baseline_defaults_to_the_black_image_when_denormalize_is_given() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    monitor = AttributionMonitor(denormalize=(mean, std))
    ig = next(e for e in monitor.explainers if e.name == "integrated_gradients")
    expected = -torch.tensor(mean) / torch.tensor(std)
    assert torch.allclose(torch.as_tensor(ig.baseline).flatten(), expected)
    plain = AttributionMonitor()
    assert next(e for e in plain.explainers if e.name == "integrated_gradients").baseline is None
    given = AttributionMonitor(methods=("gradcam", IntegratedGradients(baseline=0.0)), denormalize=(mean, std))
    assert next(e for e in given.explainers if e.name == "integrated_gradients").baseline == 0.0


def test_the_normalize_transform_itself_stands_for_its_mean_and_std() -> None:
    """The README says ``denormalize=`` is "the Normalize() of your transforms": the transform object was taken as a
    callable and normalised the probes a second time (92 % of the shown pixels clamped), with IG's black baseline
    lost. Now it means its ``(mean, std)``."""
    transforms = pytest.importorskip("torchvision.transforms")
    v2 = pytest.importorskip("torchvision.transforms.v2")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for transform in (transforms.Normalize(mean, std), v2.Normalize(mean, std)):
        monitor = AttributionMonitor(denormalize=transform)
        ig = next(e for e in monitor.explainers if e.name == "integrated_gradients")
        assert torch.allclose(torch.as_tensor(ig.baseline).flatten(), -torch.tensor(mean) / torch.tensor(std))
        images = torch.rand(2, 3, 4, 4)
        shown = to_display_images(transform(images), monitor.media.denormalize)
        assert torch.allclose(shown, images, atol=1e-6)  # the probes as they were before the transform


# ------------------------------------------------------------------------------------------------ cost


def test_cost_is_logged_said_once_and_warned_when_large(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_xai import _cost

    said: list[str] = []
    monkeypatch.setattr(_cost, "rank_zero_info", said.append)
    monkeypatch.setattr(_cost, "WARN_SHARE", 0.0)  # any cost is "large": the warning must come, once
    monkeypatch.setattr(_cost, "WARN_SECONDS", 0.0)
    monitor = AttributionMonitor(
        num_probes=4, methods=("gradcam", IntegratedGradients(n_steps=4)), drift=DriftPolicy(warmup_epochs=0)
    )
    L.seed_everything(0, verbose=False)
    train, val = loaders()
    with pytest.warns(
        UserWarning, match=r"the monitor takes .* per evaluation, .* of the time between two evaluations"
    ) as caught:
        L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], max_epochs=3)).fit(TinyCNN(), train, val)
    assert sum("the monitor takes" in str(w.message) for w in caught) == 1
    assert len(said) == 1 and "an evaluation takes" in said[0] and "integrated_gradients with 4 steps" in said[0]
    assert "gradcam on `" in said[0] and re.search(r"integrated_gradients with 4 steps \(\d+\.\d\d s\)", said[0])
    for h in monitor.history:  # the evaluation's time and each method's, which it contains
        methods = [h.scalars[f"xai/{m}/seconds"] for m in ("gradcam", "integrated_gradients")]
        assert min(methods) > 0 and sum(methods) < h.scalars["xai/seconds"]


@pytest.mark.parametrize("value", [2, 2.0, np.int64(2), torch.tensor(2), torch.tensor(2.0)])
def test_counts_are_converted_to_ints_and_a_rule_fires_again_after_the_cooldown(value: Any) -> None:
    rule = DriftRule(threshold=0.5, patience=value)
    assert type(rule.patience) is int and rule.patience == 2
    tracker = AlertTracker([DriftRule(threshold=0.5)], cooldown=value)
    assert type(tracker.cooldown) is int and tracker.cooldown == 2
    series = (0.9, 0.1, 0.9, 0.1, 0.9)  # over, under, over (in cooldown), under, over (free again)
    assert [len(tracker.update("gradcam", {"rank_vs_reference/median": v})) for v in series] == [1, 0, 0, 0, 1]


@pytest.mark.parametrize(
    ("owner", "argument", "value", "fix"),
    [
        ("AlertTracker", "cooldown", 1.5, "pass a whole number: cooldown=1 or cooldown=2"),  # would never be reached
        ("DriftRule", "patience", 2.5, "pass a whole number: patience=2 or patience=3"),
        ("DriftRule", "patience", 0, "pass patience=1 or more"),
        ("AlertTracker", "cooldown", -1, "pass cooldown=0 or more"),
        ("AlertTracker", "cooldown", True, "pass a number, not a bool, e.g. cooldown=0"),
        ("DriftRule", "patience", "2", "pass patience=2"),
        ("AlertTracker", "cooldown", torch.tensor(0.5), "pass a whole number: cooldown=0 or cooldown=1"),
    ],
)
def test_fractional_counts_are_refused_naming_argument_value_and_fix(
    owner: str, argument: str, value: Any, fix: str
) -> None:
    with pytest.raises(ValueError, match=rf"`{owner}\({argument}=\.\.\.\)` must be an int >= \d, got .*; {fix}\.$"):
        if owner == "AlertTracker":
            AlertTracker([], cooldown=value)
        else:
            DriftRule(patience=value)


def _fired() -> Detection:
    return Detection(0.5, 0.1, 0.01, fired=True, probe_indices=(0,), num_probes=4)


def test_one_cooldown_for_the_detector_and_every_rule_of_a_method() -> None:
    over = DriftResult({"rank_vs_reference": torch.ones(4)}, {"rank_vs_reference/median": 1.0}, alerts_armed=True)
    calm = DriftResult({"rank_vs_reference": torch.zeros(4)}, {"rank_vs_reference/median": 0.0}, alerts_armed=True)
    tracker = AlertTracker([DriftRule(threshold=0.5)], cooldown=2)
    # the detector alerts at 0; the rule's crossing at 1 is in the cooldown, and fires once it is over (at 3)
    got = [tracker.check("m", 0, 0, calm, _fired(), 0.4)] + [
        tracker.check("m", e, e, over, None, 0.4) for e in (1, 2, 3)
    ]
    assert [[a.metric for a in alerts] for alerts in got] == [["novel_relevance"], [], [], ["rank_vs_reference"]]
    # the rule's alert silences the detector of that method for 2 evaluations, not another method's
    assert tracker.check("m", 4, 4, calm, _fired(), 0.4) == []
    assert len(tracker.check("other", 4, 4, calm, _fired(), 0.4)) == 1
    assert tracker.check("m", 5, 5, calm, _fired(), 0.4) == []
    assert [a.metric for a in tracker.check("m", 6, 6, calm, _fired(), 0.4)] == ["novel_relevance"]
    assert len(AlertTracker([DriftRule(threshold=0.5)]).check("m", 0, 0, over, _fired(), 0.4)) == 2  # together: both


def test_a_tracker_state_from_rules_with_their_own_cooldown_still_loads() -> None:
    tracker = AlertTracker([DriftRule(threshold=0.5)])
    tracker.load_state_dict({"states": {"0:gradcam": {"streak": 1, "cooldown_left": 2, "firing": False}}, "alerts": []})
    series = (0.9, 0.9, 0.9)  # the two evaluations of cooldown left: silent; then free
    assert [len(tracker.update("gradcam", {"rank_vs_reference/median": v})) for v in series] == [0, 0, 1]
    assert tracker.state_dict()["states"] == {"0:gradcam": {"streak": 4, "firing": True}}
    assert tracker.state_dict()["quiet"] == {"gradcam": 3}


def test_fewer_than_four_probes_never_alert_even_with_identical_movements() -> None:
    """Below 4 probes the t-test cannot pass (infinite quantile); identical movements (standard error 0) must not
    turn that into a finite threshold (inf * 0 = nan, which max() skips)."""
    import math

    from lightning_xai.drift.detector import ShiftDetector

    threshold, _ = ShiftDetector().threshold([0.01, 0.02], standard_error=0.0, probes=3, ready=True)
    assert threshold is not None and math.isinf(threshold)


def test_an_evaluation_that_is_not_armed_does_not_count_towards_the_cooldown() -> None:
    # the detector counts its quiet evaluations only when armed; the one cooldown counts the same ones
    tracker = AlertTracker([DriftRule(threshold=0.5)], cooldown=2)
    key = "rank_vs_reference/median"
    assert tracker.update("gradcam", {key: 0.9})  # fires: two armed evaluations of quiet follow
    assert not tracker.update("gradcam", {})  # a changed setup: not armed, not counted
    assert not tracker.update("gradcam", {key: 0.1})  # quiet 1 of 2
    assert not tracker.update("gradcam", {key: 0.9})  # quiet 2 of 2 (had the unarmed one counted, it fired here)
    assert tracker.update("gradcam", {key: 0.9})  # the cooldown is over: it fires


def test_the_console_warning_carries_the_models_answer_when_it_was_asked() -> None:
    """``on_drift="warn"``: the console said only the message, while ``xai/alerts`` also said that the model follows
    what moved (the evidence that tells a shortcut from noise at a glance); now the warning ends with it, and an
    alert the model was not asked about (a fixed rule) warns with its message alone."""
    from types import SimpleNamespace

    from lightning_xai._trainer import DriftActions
    from lightning_xai.drift.alerts import DriftAlert
    from lightning_xai.explain.behaviour import FollowTest

    follow = FollowTest("region", 42, 39, 0, 39, 0, 1e-12, True, 2)
    asked = DriftAlert(4, 40, "gradcam", "novel_relevance", "mean", 0.2, 0.01, (0, 1), "moved.", follow=follow)
    rule = DriftAlert(4, 40, "gradcam", "rank_vs_reference", "median", 0.5, 0.4, (0,), "over.")
    trainer = SimpleNamespace(strategy=None, state=None)
    with pytest.warns(UserWarning) as record:
        DriftActions("warn").act(trainer, [asked, rule])  # type: ignore[arg-type]
    said = [str(w.message) for w in record if "AttributionMonitor" in str(w.message)]
    assert said == [
        "AttributionMonitor: moved; the model follows them in 39/42 transplants (0/42 at epoch 2).",
        "AttributionMonitor: over.",
    ]


def test_a_share_rule_lists_the_probes_its_share_counts_those_over_probe_threshold_not_at_it() -> None:
    """README: a probe counts as drifted when its drift is *above* ``DriftPolicy.probe_threshold``, for the ``share``
    statistics and for a share rule's ``DriftAlert.probe_indices``. A top-k drift often sits exactly at the threshold
    (1 − IoU = 0.5): the share left those probes out while the alert listed them."""
    tracker = DriftTracker(topk=0.25, probe_threshold=0.5)
    before, after = torch.zeros(4, 2, 2), torch.zeros(4, 2, 2)
    before[:, 0, 0], before[:, 0, 1] = 2.0, 1.0  # the top quarter of each map: cell (0, 0)
    after[:, 0, 0], after[:, 0, 1] = 2.0, 1.0
    after[2:, 0, 0], after[2:, 1, 1] = 0.0, 2.0  # probes 2, 3 moved their top cell away: 1 − IoU = 1.0
    after[1, 1, 1] = 2.0  # probe 1 kept its top cell and a tie joined it: 1 − IoU = 0.5, at the threshold
    tracker.update("gradcam", 0, before)
    drift = tracker.update("gradcam", 1, after)
    per_probe, share = drift.per_probe["topk_vs_previous"], drift.statistics["topk_vs_previous/share"]
    assert per_probe.tolist() == [0.0, 0.5, 1.0, 1.0] and share == 0.5
    rule = DriftRule(metric="topk", reference="previous", statistic="share", threshold=0.5)
    alerts = AlertTracker([rule], cooldown=0).check("gradcam", 1, 8, replace(drift, alerts_armed=True), None, 0.5)
    assert [a.probe_indices for a in alerts] == [(2, 3)]
    assert "2 probes over it" in alerts[0].message


def test_a_share_rule_lists_a_probe_whose_float32_drift_rounds_just_over_probe_threshold() -> None:
    """The share counts a probe over ``probe_threshold`` in float64 (the tracker's ``d > probe_threshold``); a top-k
    drift of 1 − IoU = 1 − 0.6 is float32's 0.4000000059..., over the default 0.4 there. Compared in float32 (the
    threshold cast to float32) it is not: the rule fired on a share of 1.0 and listed none ('0 probes over it')."""
    before = torch.arange(100, 0, -1).float().view(1, 10, 10).repeat(4, 1, 1)
    after = before.clone()
    after.view(4, -1)[:, 15:20] = 0.5  # 5 of each probe's 20 top cells leave: IoU = 15 / 25
    tracker = DriftTracker(topk=0.2)  # the default probe_threshold, 0.4
    tracker.update("gradcam", 0, before)
    drift = tracker.update("gradcam", 1, after)
    assert drift.statistics["topk_vs_previous/share"] == 1.0
    rule = DriftRule(metric="topk", reference="previous", statistic="share", threshold=0.5)
    armed = replace(drift, alerts_armed=True)
    alerts = AlertTracker([rule], cooldown=0).check("gradcam", 1, 8, armed, None, tracker.probe_threshold)
    assert [a.probe_indices for a in alerts] == [(0, 1, 2, 3)]
    assert "4 probes over it" in alerts[0].message
