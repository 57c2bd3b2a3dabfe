"""The evidence an alert carries: one region per class, the probes that moved, and their maps before and at the alert.

Hand-made maps: every probe looks at its object in the centre; from epoch 4 on each class's probes also read a 4x4
cue in a corner of their own (a different corner per class, not aligned with the detector's 4-pixel cells).
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from lightning_xai._follow import donor_groups
from lightning_xai.drift.alerts import AlertTracker, DriftAlert
from lightning_xai.drift.detector import ShiftDetector
from lightning_xai.drift.evidence import AlertRegion, gain_regions, input_maps, place_name
from lightning_xai.drift.tracker import DriftTracker
from lightning_xai.functional.shift import peak_region, relevance_distribution, smallest_box

CUES = {0: (1, 1, 5, 5), 1: (1, 27, 5, 31), 2: (27, 1, 31, 5), 3: (27, 27, 31, 31)}  # (top, left, bottom, right)
CLASSES = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def _maps(epoch: int) -> torch.Tensor:
    """(8, 32, 32): the object (rows/cols 10-21, a little different per probe), plus the class's cue from epoch 4."""
    maps = torch.zeros(8, 32, 32)
    for i in range(8):
        maps[i, 10:22, 10:22] = 1.0 + 0.1 * i
        maps[i, 12 + i % 3, 12:20] += 0.5  # a stroke that differs between probes
        if epoch >= 4:
            top, left, bottom, right = CUES[int(CLASSES[i])]
            maps[i, top:bottom, left:right] = 6.0 + (0.5 if epoch == 5 else 0.0)
    return maps


def _alert() -> tuple[DriftAlert, dict[int, torch.Tensor]]:
    det, tracker, drift = ShiftDetector(), AlertTracker([]), DriftTracker(warmup_epochs=0)
    seen: dict[int, torch.Tensor] = {}
    alerts: list[DriftAlert] = []
    for epoch in range(6):
        maps = seen[epoch] = _maps(epoch)
        detection = det.update("integrated_gradients", maps, (32, 32), True, classes=CLASSES, epoch=epoch)
        update = drift.update("integrated_gradients", epoch, maps)
        alerts += tracker.check("integrated_gradients", epoch, 10 * epoch, update, detection, 0.4)
    assert [a.epoch for a in alerts] == [5]  # the candidate at epoch 4, confirmed at epoch 5
    return alerts[0], seen


def test_one_box_per_class_on_its_own_cue() -> None:
    alert, _ = _alert()
    assert alert.probe_indices == tuple(range(8)) and alert.statistic == "mean"
    assert sorted(r.label for r in alert.regions) == ["class 0", "class 1", "class 2", "class 3"]
    for region in alert.regions:
        (c,) = region.classes
        assert region.box == CUES[c]  # exactly the cue: not a box around all four corners
        assert region.probe_indices == (2 * c, 2 * c + 1)
    assert {r.place for r in alert.regions} == {"top-left", "top-right", "bottom-left", "bottom-right"}
    top, left, bottom, right = alert.regions[0].box
    assert alert.region == (top, left, bottom - 1, right - 1)  # inclusive, the largest group's box


def test_a_map_with_no_relevance_is_drawn_empty_and_gains_nowhere() -> None:
    """A Grad-CAM map can become all zero (every cell negative before its ReLU): it shows no relevance, so the
    evidence draws it empty and its class's box comes from the probes whose relevance did move (not the whole
    quiet area a uniform map would fill); such a probe did not move, so it is not among the alert's probes."""
    det, tracker, drift = ShiftDetector(), AlertTracker([]), DriftTracker(warmup_epochs=0)
    alerts: list[DriftAlert] = []
    for epoch in range(6):
        maps = _maps(epoch)
        if epoch >= 4:
            maps[7] = 0.0  # class 3's second probe: nothing at all
        detection = det.update("integrated_gradients", maps, (32, 32), True, classes=CLASSES, epoch=epoch)
        update = drift.update("integrated_gradients", epoch, maps)
        alerts += tracker.check("integrated_gradients", epoch, 10 * epoch, update, detection, 0.4)
    (alert,) = alerts
    assert {r.classes[0]: r.box for r in alert.regions}[3] == CUES[3]
    assert alert.evidence is not None and 6 in alert.evidence.probe_indices
    assert 7 not in alert.evidence.probe_indices  # was in: its blank map read as uniform at the confirmation


def test_a_class_whose_only_moved_probe_lost_all_relevance_gets_no_box() -> None:
    """Class 3: probe 6 keeps its map, probe 7's map becomes all zero. Nothing of class 3 went anywhere, so the alert
    (on the other classes' cues) names no region of class 3, not "most of the image"."""
    det, tracker, drift = ShiftDetector(), AlertTracker([]), DriftTracker(warmup_epochs=0)
    alerts: list[DriftAlert] = []
    for epoch in range(6):
        maps = _maps(epoch)
        if epoch >= 4:
            maps[6] = _maps(3)[6]  # no cue: unchanged
            maps[7] = 0.0
        detection = det.update("integrated_gradients", maps, (32, 32), True, classes=CLASSES, epoch=epoch)
        update = drift.update("integrated_gradients", epoch, maps)
        alerts += tracker.check("integrated_gradients", epoch, 10 * epoch, update, detection, 0.4)
    (alert,) = alerts
    assert sorted(r.classes[0] for r in alert.regions) == [0, 1, 2]
    assert all(r.box == CUES[r.classes[0]] for r in alert.regions)


def test_the_message_names_classes_and_places_and_stays_short() -> None:
    alert, _ = _alert()
    assert len(alert.message) <= 200, alert.message
    assert alert.message.startswith(
        "Attribution drift at epoch 5 (integrated_gradients): 8/8 probes moved relevance to places all probes ignored"
    )
    for c, place in ((0, "top-left"), (1, "top-right"), (2, "bottom-left"), (3, "bottom-right")):
        assert f"class {c} {place}" in alert.message


def test_evidence_holds_the_maps_before_and_at_the_alert() -> None:
    alert, seen = _alert()
    evidence = alert.evidence
    assert evidence is not None and evidence.probe_indices == alert.probe_indices and evidence.before_epoch == 3
    assert evidence.before.dtype == torch.float32 and evidence.before.device.type == "cpu"
    before = seen[3] / seen[3].sum(dim=(1, 2), keepdim=True)  # |map| normalised to sum 1 per probe
    after = seen[5] / seen[5].sum(dim=(1, 2), keepdim=True)
    assert torch.allclose(evidence.before, before) and torch.allclose(evidence.after, after)
    for i in range(8):  # what moved, moved onto the cue of the probe's class
        top, left, bottom, right = CUES[int(CLASSES[i])]
        moved = (evidence.after[i] - evidence.before[i]).clamp_min(0)
        assert float(moved[top:bottom, left:right].sum()) == pytest.approx(float(moved.sum()), rel=1e-6)


def test_checkpoints_keep_regions_not_maps_and_load_with_weights_only() -> None:
    alert, _ = _alert()
    buffer = io.BytesIO()
    torch.save({"alert": alert.to_dict()}, buffer)
    buffer.seek(0)
    loaded = DriftAlert.from_dict(torch.load(buffer, weights_only=True)["alert"])
    assert loaded == alert and loaded.regions == alert.regions and loaded.evidence is None
    older = alert.to_dict() | {"statistic": "median", "from_a_newer_version": 1}  # older label, newer field
    del older["regions"]
    assert DriftAlert.from_dict(older).statistic == "mean" and DriftAlert.from_dict(older).regions == ()
    assert (
        AlertRegion.from_dict({"label": "class 1", "classes": [1], "probe_indices": [2], "box": [0, 0, 4, 4]}).place
        == ""
    )


def test_a_pending_candidate_survives_a_checkpoint_and_still_shows_evidence() -> None:
    det = ShiftDetector()
    for epoch in range(5):
        d = det.update("m", _maps(epoch), (32, 32), True, classes=CLASSES, epoch=epoch)
    assert d is not None and d.candidate
    buffer = io.BytesIO()
    torch.save(det.state_dict(), buffer)  # the raw maps stay in memory: only pooled maps and primitives
    buffer.seek(0)
    resumed = ShiftDetector()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    d = resumed.update("m", _maps(5), (32, 32), True, classes=CLASSES, epoch=5)
    assert d is not None and d.fired and d.evidence is not None and d.evidence.before_epoch == 3
    cells = {0: (0, 0, 4, 4), 1: (0, 28, 4, 32), 2: (28, 0, 32, 4), 3: (28, 28, 32, 32)}  # 9 of the cue's 16 px
    assert {r.classes[0]: r.box for r in d.regions} == cells  # only the pooled maps were kept: 4-pixel cells
    assert d.evidence.before.shape == (8, 32, 32)


def test_unlabeled_probes_are_grouped_by_where_they_gained() -> None:
    current, origin = relevance_distribution(_maps(5)), relevance_distribution(_maps(3))
    fine = (input_maps(_maps(5), (32, 32)), input_maps(_maps(3), (32, 32)))
    regions = gain_regions(current, origin, None, tuple(range(8)), None, fine, (32, 32))
    assert sorted((r.label, r.box) for r in regions) == [
        ("probes 0,1", CUES[0]),
        ("probes 2,3", CUES[1]),
        ("probes 4,5", CUES[2]),
        ("probes 6,7", CUES[3]),
    ]
    coarse = gain_regions(current, origin, None, (0, 1), CLASSES, None, (32, 32))  # no fine maps: whole cells
    assert [r.box for r in coarse] == [(0, 0, 4, 4)]  # the cell holding 9 of the cue's 16 pixels


def test_peak_region_keeps_one_place_and_place_names() -> None:
    gain = torch.zeros(8, 8)
    gain[0, 0], gain[7, 7], gain[0, 1] = 1.0, 0.9, 0.6
    assert peak_region(gain) == (0, 0, 0, 1)  # not the box around both corners
    assert peak_region(torch.zeros(3, 3)) is None
    assert place_name((12, 12, 20, 20), (32, 32)) == "centre" and place_name((0, 12, 4, 20), (32, 32)) == "top"


def _brute_smallest_box(gain: torch.Tensor, share: float) -> tuple[int, int, int, int] | None:
    """Every box of ``gain`` in a plain loop: the smallest holding ``share`` of the total, then the most, then first."""
    g, best = gain.double().clamp_min(0), None
    total = float(g.sum())
    if total <= 0:
        return None
    rows, cols = g.shape
    for top in range(rows):
        for left in range(cols):
            for bottom in range(top + 1, rows + 1):
                for right in range(left + 1, cols + 1):
                    held = float(g[top:bottom, left:right].sum())
                    key = ((bottom - top) * (right - left), -held, top, left)
                    if held >= share * total * (1 - 1e-9) and (best is None or key < best[0]):
                        best = (key, (top, left, bottom, right))
    return None if best is None else best[1]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("share", [0.5, 0.9, 1.0])
def test_smallest_box_matches_a_plain_search_over_every_box(seed: int, share: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    gain = torch.randn(5 + seed % 3, 6, generator=gen)  # negatives count as nothing gained
    gain[gain < 0.8] = torch.where(gain[gain < 0.8] > 0, 0.0, gain[gain < 0.8])  # sparse, like a difference map
    gain[seed % 5, 2] = 3.0
    found = smallest_box(gain, share)
    assert found == _brute_smallest_box(gain, share)
    assert smallest_box(-gain.abs(), share) is None and smallest_box(torch.zeros(3, 3), share) is None
    ties = torch.randint(0, 3, (4 + seed % 3, 5), generator=gen).float()  # whole numbers: equal boxes tie exactly
    assert smallest_box(ties, share) == _brute_smallest_box(ties, share)


def test_smallest_box_breaks_ties_in_row_order_and_checks_its_share() -> None:
    gain = torch.zeros(3, 3)
    gain[0, 0], gain[1, 0], gain[2, 1], gain[2, 2] = 1.0, 1.0, 1.0, 1.0  # a 2x1 and a 1x2 pair, equal areas and gains
    assert smallest_box(gain, 0.5) == (0, 0, 2, 1)  # the first in row order, whatever the box's shape
    with pytest.raises(ValueError, match="share"):
        smallest_box(gain, 1.5)


def _first_alert_of_a_mark(background: torch.Tensor, mark: tuple[int, int, int, int]) -> Any:
    """The detector's first alert on 8 probes of ``background`` ``(32, 32)`` (probe i scaled by 1 + 0.1 i) where a
    mark appears at epoch 4 (``(top, left, bottom, right)``, bottom/right exclusive), a little stronger at epoch 5."""

    def maps(epoch: int) -> torch.Tensor:
        m = background * (1.0 + 0.1 * torch.arange(8).view(8, 1, 1))
        if epoch >= 4:
            m[:, mark[0] : mark[2], mark[1] : mark[3]] = 8.0 + (0.5 if epoch == 5 else 0.0)
        return m

    det, found = ShiftDetector(), []
    for epoch in range(6):
        d = det.update("integrated_gradients", maps(epoch), (32, 32), True, classes=torch.zeros(8), epoch=epoch)
        found += [d] if d is not None and d.fired else []
    return found[0]


def test_a_mark_smaller_than_a_window_is_boxed_to_its_pixels_and_the_test_copies_the_windows() -> None:
    """A 3x3 mark (smaller than the 4-pixel windows): the box shown is the mark, the windows around it (5x5: the
    four windows holding all of it tie) are what the transplant test copies."""
    mark = (5, 21, 8, 24)  # rows 5-7, cols 21-23: across two cells both ways
    background = torch.zeros(32, 32)
    background[10:22, 10:22] = 1.0
    fired = _first_alert_of_a_mark(background, mark)
    (region,) = fired.regions
    assert region.box == mark and region.windows == (4, 20, 9, 25)
    assert donor_groups(fired.regions, torch.zeros(8)) == [((4, 20, 9, 25), list(range(8)))]
    buffer = io.BytesIO()
    torch.save(region.to_dict(), buffer)
    buffer.seek(0)
    assert AlertRegion.from_dict(torch.load(buffer, weights_only=True)) == region  # kept by checkpoints
    older = {k: v for k, v in region.to_dict().items() if k not in ("windows", "follow")}  # an older version's
    assert AlertRegion.from_dict(older) == AlertRegion("class 0", (0,), tuple(range(8)), mark, region.place)


def test_a_mark_across_a_cell_edge_into_the_objects_cell_is_boxed_whole() -> None:
    """A 4x4 mark at columns 10-13, across the edge of the object's cells (columns 4-11, not quiet) and a quiet cell
    (12-15): its box is the whole mark. Tightened on the quiet cells' gain alone it was the 2-pixel sliver on the
    quiet side (IoU 0.5; the trial's unaligned patches got 1-pixel boxes)."""
    mark = (0, 10, 4, 14)
    background = torch.full((32, 32), 0.05)
    background[0:28, 4:12] = 1.0  # the object, in cell columns 1-2
    (region,) = _first_alert_of_a_mark(background, mark).regions
    assert region.box == mark


def test_probes_that_all_lose_their_relevance_make_no_candidate() -> None:
    """Probes 2-7 become all zero. They were read as spread evenly, so they "moved" into every quiet region, made a
    candidate, and the model had to be asked (its "not followed" dropped it); a map with no relevance says nowhere,
    so now nothing moved: no candidate, the model is not asked, no alert."""
    from lightning_xai.explain.behaviour import FollowTest

    asked: list[list[str]] = []

    def verify(regions: Any, ignored: Any, origin_epoch: int) -> FollowTest:
        asked.append([r.label for r in regions])
        return FollowTest("region", 8, 0, 0, 0, 4, 0.9, False, origin_epoch)  # 4 lost, none gained

    det, tracker, drift = ShiftDetector(), AlertTracker([]), DriftTracker(warmup_epochs=0)
    alerts: list[DriftAlert] = []
    for epoch in range(8):
        maps = _maps(0) + 0.01 * torch.rand(8, 32, 32, generator=torch.Generator().manual_seed(epoch))
        if epoch >= 4:
            maps[2:] = 0.0
        detection = det.update(
            "integrated_gradients", maps, (32, 32), True, classes=CLASSES, epoch=epoch, verify=verify
        )
        update = drift.update("integrated_gradients", epoch, maps)
        alerts += tracker.check("integrated_gradients", epoch, 10 * epoch, update, detection, 0.4)
        assert detection is None or (detection.score < 0.01 and not detection.candidate)
    assert not asked and not alerts
