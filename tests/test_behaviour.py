"""The transplant test: does the model follow a region copied from another class's probe, now vs before?"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from scipy import stats
from torch import nn

from lightning_xai._follow import donor_groups
from lightning_xai.drift.detection import followed_regions
from lightning_xai.drift.detector import ShiftDetector
from lightning_xai.drift.evidence import AlertRegion
from lightning_xai.explain.behaviour import (
    FollowTest,
    colour_transferred,
    follow_test,
    quiet_masks,
    snapshot,
    transplant_pairs,
    transplanted,
)
from lightning_xai.functional.shift import ignored_relevance
from lightning_xai.functional.stats import binomial_tail

CLASSES = 6


class Reader(nn.Module):
    """Decides by the mean intensity of a 4x4 patch (top-left) with weight ``w`` and of the centre with ``1 - w``:
    class ``k`` is the intensity nearest ``(k + 1) / (CLASSES + 1)``. ``w`` 0: reads the object; 1: the patch."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.bn = nn.BatchNorm1d(1)  # a buffer-holding layer: the guard must leave its statistics as they were
        self.register_buffer("codes", (torch.arange(CLASSES) + 1.0) / (CLASSES + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = x[:, 0, :4, :4].mean(dim=(1, 2))
        centre = x[:, 0, 12:20, 12:20].mean(dim=(1, 2))
        scale = self.bn(torch.ones(x.shape[0], 1)).mean() * 0 + 1  # BatchNorm runs (eval mode: no update)
        return -scale * (
            self.w * (patch[:, None] - self.codes) ** 2 + (1 - self.w) * (centre[:, None] - self.codes) ** 2
        )


def _probes() -> tuple[torch.Tensor, torch.Tensor]:
    """One probe per class: its code in the centre (the object) and in the top-left patch (the cue)."""
    labels = torch.arange(CLASSES)
    images = torch.zeros(CLASSES, 1, 32, 32)
    for k in range(CLASSES):
        value = (k + 1) / (CLASSES + 1)
        images[k, :, 12:20, 12:20] = value
        images[k, :, :4, :4] = value
    return images, labels


@pytest.mark.parametrize(("n", "k", "p"), [(10, 9, 0.5), (40, 30, 0.5), (7, 0, 0.5), (5, 6, 0.5), (60, 5, 0.02)])
def test_binomial_tail_is_scipys_survival_function(n: int, k: int, p: float) -> None:
    expected = 1.0 if k <= 0 else float(stats.binom.sf(k - 1, n, p))
    assert binomial_tail(n, k, p) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_pairs_take_every_donor_and_every_other_class_and_spread_a_cap_evenly() -> None:
    targets = torch.tensor([0, 0, 1, 2, 3])
    pairs = transplant_pairs(targets, [0, 1, 3])
    assert pairs == [(0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (3, 0), (3, 1), (3, 2), (3, 4)]
    assert transplant_pairs(targets, [0, 1, 3], limit=3) == [pairs[0], pairs[3], pairs[6]]


def test_transplanted_copies_the_mask_only_and_colour_transfer_matches_the_donors_channels() -> None:
    images, _ = _probes()
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[:4, :4] = True
    out = transplanted(images, mask, [(5, 1)])
    assert torch.equal(out[0, :, :4, :4], images[5, :, :4, :4])
    assert torch.equal(out[0, :, 4:, :], images[1, :, 4:, :]) and torch.equal(out[0, :, :, 4:], images[1, :, :, 4:])
    per_pair = torch.stack([mask, ~mask])
    both = transplanted(images, per_pair, [(5, 1), (5, 2)])
    assert torch.equal(both[1, :, :4, :4], images[2, :, :4, :4]) and torch.equal(
        both[1, :, 8:, 8:], images[5, :, 8:, 8:]
    )
    g = torch.Generator().manual_seed(0)
    colours = torch.rand(3, 3, 8, 8, generator=g)
    moved = colour_transferred(colours, [(0, 1)])
    assert torch.allclose(moved.mean(dim=(2, 3)), colours[0:1].mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(moved.std(dim=(2, 3)), colours[0:1].std(dim=(2, 3)), atol=1e-5)
    # the shapes stay the recipient's: per channel, an increasing affine map of its values
    ranks = moved[0].flatten(1).argsort(dim=1)
    assert torch.equal(ranks, colours[1].flatten(1).argsort(dim=1))


def test_a_model_that_took_the_patch_follows_it_and_one_that_did_not_never_does() -> None:
    images, labels = _probes()
    before, now = Reader(0.0), Reader(1.0)
    regions = [((0, 0, 4, 4), [k]) for k in range(CLASSES)]  # every class's cue sits in the top-left patch
    found = follow_test(now, snapshot(before), 2, images, labels, regions, alpha=0.005)
    assert found is not None and found.kind == "region" and found.pairs == CLASSES * (CLASSES - 1)
    assert (found.followed, found.followed_before, found.gained, found.lost) == (30, 0, 30, 0)
    assert found.passed and found.p_value == pytest.approx(0.5**30)
    assert found.summary() == "the model follows them in 30/30 transplants (0/30 at epoch 2)"
    # the object's place: the model followed it at the reference (it read the object) and less now
    centre = [((12, 12, 20, 20), [k]) for k in range(CLASSES)]
    found = follow_test(Reader(0.5), snapshot(before), 2, images, labels, centre, alpha=0.005)
    assert found is not None and not found.passed and found.lost > 0
    # a place neither reads: nothing follows, nothing passes
    corner = [((28, 28, 32, 32), [k]) for k in range(CLASSES)]
    found = follow_test(now, snapshot(before), 2, images, labels, corner, alpha=0.005)
    assert found is not None and (found.followed, found.followed_before, found.p_value) == (0, 0, 1.0)
    assert not found.passed


def test_a_cue_outside_the_boxes_is_found_where_both_probes_ignored_everything() -> None:
    images, labels = _probes()
    corner = [((28, 28, 32, 32), [k]) for k in range(CLASSES)]  # the boxes miss the cue ...
    relevance = torch.full((CLASSES, 8, 8), 0.01)
    relevance[:, 3:5, 3:5] = 0.2  # ... but every probe looked at its object (the centre) only, least at the patch
    relevance[:, 0, 0] = 0.001
    ignored = ignored_relevance(relevance)
    found = follow_test(Reader(1.0), snapshot(Reader(0.0)), 2, images, labels, corner, alpha=0.005, ignored=ignored)
    assert found is not None and found.kind == "quiet" and found.passed and (found.gained, found.lost) == (30, 0)


def test_the_ignored_places_copied_are_at_most_half_the_image_the_least_relevant_first() -> None:
    relevance = torch.full((2, 4, 4), 0.05)
    relevance[:, :, 0] = 0.01  # both ignored the first column most; probe 1 alone its last row
    relevance[1, 3, :] = 0.001
    relevance[:, 1:3, 1:3] = 0.1  # the centre: above the uniform level (1/16) in both, never copied
    ignored = ignored_relevance(relevance)
    assert torch.equal(ignored.isinf()[0], relevance[0] >= 1 / 16)
    masks = quiet_masks(ignored, [(0, 1)], (8, 8))
    assert masks.shape == (1, 8, 8) and int(masks.sum()) == 8 * 8 // 2  # 12 ignored cells, 8 copied
    cells = masks[0, ::2, ::2]  # one pixel per cell
    assert cells[:, 0].all()  # the least relevant to either probe (the larger of the two: 0.01) ...
    assert int(cells[:, 1:].sum()) == 4  # ... then 4 of the 8 places at 0.05 (the last row too: probe 0 looked there)
    assert not cells[1:3, 1:3].any()  # never the centre


@pytest.mark.parametrize(
    ("size", "cells"), [((28, 28), (8, 8)), ((10, 10), (8, 8)), ((5, 5), (3, 3)), ((32, 24), (8, 5))]
)
def test_the_cap_counts_pixels_where_cells_are_unequal_and_ties_take_no_side_first(
    size: tuple[int, int], cells: tuple[int, int]
) -> None:
    g = torch.Generator().manual_seed(1)
    relevance = torch.rand(2, *cells, generator=g) * 1e-3
    relevance[:, :, : cells[1] // 2] = 0.0  # the left half ignored most (its cells the wider ones at some sizes)
    masks = quiet_masks(ignored_relevance(relevance), [(0, 1)], size)
    assert 0 < int(masks.sum()) <= size[0] * size[1] // 2
    tied = quiet_masks(ignored_relevance(torch.zeros(1, 8, 8)), [(0, 0)], (32, 32))[0]  # every place ignored alike
    assert int(tied.sum()) == 32 * 32 // 2
    assert tied[:16].any() and tied[16:].any() and tied[:, :16].any() and tied[:, 16:].any()
    quiet = torch.zeros(2, 8, 8, dtype=torch.bool)  # a bool mask: True where ignored, all alike
    quiet[:, 4:] = True
    assert torch.equal(quiet_masks(quiet, [(0, 1)], (8, 8))[0], quiet[0])


def test_nothing_to_test_without_a_small_box_or_another_class() -> None:
    images, labels = _probes()
    whole = [((0, 0, 32, 32), [0])]  # most of the image: it would move the object too
    assert follow_test(Reader(1.0), snapshot(Reader(0.0)), 0, images, labels, whole, alpha=0.005) is None
    same = torch.zeros(CLASSES, dtype=torch.long)
    patch = [((0, 0, 4, 4), [0])]
    assert follow_test(Reader(1.0), snapshot(Reader(0.0)), 0, images, same, patch, alpha=0.005) is None


def test_the_test_leaves_the_model_as_it_found_it() -> None:
    images, labels = _probes()
    model = Reader(1.0).train()
    model.w.grad = torch.full((), 7.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    follow_test(model, snapshot(Reader(0.0)), 0, images, labels, [((0, 0, 4, 4), [1])], alpha=0.005)
    assert model.training and model.w.requires_grad and float(model.w.grad) == 7.0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def _maps(evaluations: int = 7, probes: int = 8, move_at: int = 5) -> torch.Tensor:
    """The object in the centre with jitter; from ``move_at`` on, relevance on the top-right corner in every probe."""
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(evaluations, probes, 16, 16, generator=g) * 0.3
    maps[:, :, 5:11, 5:11] += 1.0
    maps[move_at:, :, 0:2, 14:16] += 6.0
    return maps


def _verdict(passed: bool, gained: int = 9, lost: int = 0) -> FollowTest:
    p = 0.002 if passed else 0.5
    return FollowTest("region", 10, gained, 0, gained, lost, p, passed, 2)


def _answering(answers: list[FollowTest]) -> Callable[[tuple, torch.Tensor | None, int], FollowTest]:
    """``verify`` giving ``answers`` in turn to the movement of :func:`_maps` (from evaluation 4 on); the jitter's own
    candidates before it (at 1.5 sigma there are some) are not followed; each region alone (after a passed test,
    without ``ignored``) is followed."""

    def verify(regions: tuple, ignored: torch.Tensor | None, origin: int) -> FollowTest:
        if ignored is None:
            return _verdict(True)
        return answers.pop(0) if origin >= 4 else _verdict(False, 0, 2)

    return verify


@pytest.mark.parametrize("passed", [True, False])
def test_a_candidate_the_model_follows_alerts_at_once_and_one_it_does_not_is_dropped(passed: bool) -> None:
    asked: list[tuple[int, int, tuple[int, ...]]] = []
    alone: list[tuple[int, ...]] = []

    def verify(regions: tuple, ignored: torch.Tensor | None, origin: int) -> FollowTest:
        if ignored is None:  # after a passed test, each region alone: the model follows classes 1 and 3 only
            alone.append(regions[0].classes)
            return _verdict(False, 2, 0) if regions[0].classes[0] % 2 else _verdict(False, 1, 1)
        asked.append((origin, len(regions), tuple(ignored.shape)))
        if origin < 4:  # the jitter's own candidates at 1.5 sigma: the model does not follow them
            return _verdict(False, 0, 2)
        return _verdict(passed, 9 if passed else 1, 0 if passed else 1)

    detector, classes = ShiftDetector(calibration=2), torch.arange(8) % 4
    found = [
        detector.update("m", m, (32, 32), True, classes=classes, epoch=e, verify=verify) for e, m in enumerate(_maps())
    ]
    # the movement's candidate asked once (one region per class, each probe's ignored cells) after the jitter's
    assert asked[-1] == (4, 4, (8, 8, 8)) and all(origin < 4 for origin, *_ in asked[:-1])
    if passed:
        assert found[5].fired and not found[5].candidate and found[5].follow == _verdict(True)
        assert sorted(alone) == [(0,), (1,), (2,), (3,)]  # every class's region asked alone, once
        # the alert names the regions the model follows alone, each with its own answer
        assert [(r.classes, r.follow) for r in found[5].regions] == [
            ((1,), _verdict(False, 2, 0)),
            ((3,), _verdict(False, 2, 0)),
        ]
        assert found[5].regions[0].box == (0, 28, 4, 32) and not found[6].fired  # the cooldown follows
        assert found[5].region == (0, 28, 3, 31)
    else:
        assert not any(d.fired or d.candidate for d in found[5:]) and found[5].follow is not None and not alone


def test_a_candidate_that_leans_its_way_is_asked_again_at_its_confirmation() -> None:
    answers = [_verdict(False, gained=3, lost=1), _verdict(True)]
    detector = ShiftDetector(calibration=2)
    found = [
        detector.update("m", m, (32, 32), True, epoch=e, verify=_answering(answers)) for e, m in enumerate(_maps())
    ]
    assert found[5].candidate and found[6].fired and found[6].follow == _verdict(True) and not answers


def test_an_untestable_candidate_waits_for_its_confirmation() -> None:
    detector = ShiftDetector(calibration=2)
    found = [
        detector.update("m", m, (32, 32), True, epoch=e, verify=lambda r, q, o: None) for e, m in enumerate(_maps())
    ]
    assert found[5].candidate and found[6].fired and found[6].follow is None


def test_following_means_the_donors_own_prediction_even_where_its_cue_does_not_spell_its_label() -> None:
    images, labels = _probes()
    shuffled = images.clone()
    shuffled[:, :, :4, :4] = images.roll(1, dims=0)[:, :, :4, :4]  # each probe's patch names the next class
    regions = [((0, 0, 4, 4), [k]) for k in range(CLASSES)]
    found = follow_test(Reader(1.0), snapshot(Reader(0.0)), 2, shuffled, labels, regions, alpha=0.005)
    assert found is not None and found.passed and (found.gained, found.lost) == (30, 0)  # every pair follows


def test_the_reference_weights_are_kept_once_and_taken_again_after_a_resume() -> None:
    from lightning_xai._follow import FollowCheck

    check, model = FollowCheck(0.005), Reader(0.25)
    check.keep(model, 1, [])  # the warm-up: no reference yet
    assert not check.ready
    check.keep(model, 2, [2, 2])
    assert check.ready and check._reference is not None and check._reference[0] == 2
    model.w.data.fill_(0.75)
    check.keep(model, 3, [2, 2])  # later evaluations keep the reference's weights
    assert check._reference[0] == 2 and float(check._reference[1]["w"]) == 0.25
    resumed = FollowCheck(0.005)  # a resumed run: the reference lies before it, its first evaluation stands in
    resumed.keep(model, 6, [2])
    assert resumed._reference is not None and resumed._reference[0] == 6


def test_the_evidence_image_says_what_the_model_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_xai.drift.alerts import DriftAlert
    from lightning_xai.drift.evidence import AlertEvidence, AlertRegion
    from lightning_xai.visualize import sheet

    maps = torch.full((1, 8, 8), 1 / 64)
    region = AlertRegion("class 0", (0,), (0,), (0, 0, 2, 2), "top-left")
    found = (None, None, None, (region,), AlertEvidence((0,), maps, maps, 2))
    told: list[str] = []
    wrap = sheet.textwrap.wrap
    monkeypatch.setattr(sheet.textwrap, "wrap", lambda text, **kw: told.append(text) or wrap(text, **kw))
    for follow in (_verdict(True), None):
        alert = DriftAlert(4, 40, "gradcam", "novel_relevance", "mean", 0.1, 0.05, (0,), "m", *found, follow)
        assert sheet.render_evidence(torch.zeros(1, 1, 8, 8), alert, tile_size=32) is not None
    assert told == [
        "the probes that moved; boxes: class 0 top-left; the model follows them in 9/10 transplants (0/10 at epoch 2)",
        "the probes that moved; boxes: class 0 top-left",
    ]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_a_model_in_another_precision_is_asked_in_float32_and_kept_as_it_was(dtype: torch.dtype) -> None:
    images, labels = _probes()
    model = Reader(1.0).to(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    regions = [((0, 0, 4, 4), [k]) for k in range(CLASSES)]
    found = follow_test(model, snapshot(Reader(0.0)), 2, images, labels, regions, alpha=0.005)
    assert found is not None and found.passed and found.gained == 30
    assert all(v.dtype == before[k].dtype and torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_weights_kept_after_the_candidates_before_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_xai._follow import FollowCheck

    images, labels = _probes()
    check = FollowCheck(0.005)
    check.keep(Reader(0.0), 6, [2])  # a resumed run: the weights of epoch 6 stand in for the reference
    verify = check.verifier(Reader(1.0), images, labels, None, lambda k, m: None)
    region = (AlertRegion("class 0", (0,), (0,), (0, 0, 4, 4), "top-left"),)
    quiet = torch.zeros(CLASSES, 8, 8, dtype=torch.bool)  # nothing ignored: the boxes only
    assert verify(region, quiet, 5) is None  # the candidate's "before" (5) is older than the weights kept (6)
    found = verify(region, quiet, 6)
    assert found is not None and found.before_epoch == 6


def test_a_test_in_which_no_pair_changed_drops_nothing_and_asks_again_at_the_confirmation() -> None:
    silent = FollowTest("region", 10, 0, 0, 0, 0, 1.0, False, 2)
    answers = [silent, _verdict(True)]
    detector = ShiftDetector(calibration=2)
    found = [
        detector.update("m", m, (32, 32), True, epoch=e, verify=_answering(answers)) for e, m in enumerate(_maps())
    ]
    assert found[5].candidate and found[6].fired and found[6].follow == _verdict(True) and not answers


def test_an_alert_names_the_regions_the_model_follows_alone() -> None:
    """A model that reads the top-left patch: of two classes' regions, the one on the patch is followed when copied
    alone (every other class follows it), the one on an empty corner is not, and only the first is named."""
    images, labels = _probes()
    now, before = Reader(1.0), snapshot(Reader(0.0))

    def verify(regions: tuple, ignored: torch.Tensor | None, origin: int) -> FollowTest | None:
        groups = donor_groups(regions, labels)
        return follow_test(now, before, 2, images, labels, groups, alpha=0.005, ignored=ignored)

    on_cue = AlertRegion("class 1", (1,), (1,), (0, 0, 4, 4), "top-left")
    elsewhere = AlertRegion("class 4", (4,), (4,), (28, 28, 32, 32), "bottom-right", windows=(27, 27, 32, 32))
    (named,) = followed_regions((elsewhere, on_cue), verify, 2)
    assert named.classes == (1,) and named.follow is not None and named.follow.kind == "region"
    assert (named.follow.pairs, named.follow.gained, named.follow.lost) == (CLASSES - 1, CLASSES - 1, 0)
    assert AlertRegion.from_dict(named.to_dict()) == named  # its answer is kept by checkpoints
    # a model that follows neither region alone: every region stays named, each with its answer
    regions = followed_regions((elsewhere,), verify, 2)
    assert regions[0].classes == (4,) and regions[0].follow is not None and regions[0].follow.followed == 0


def test_at_most_max_asked_regions_are_put_to_the_model_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lightning_xai.drift.detection.MAX_ASKED", 2)
    regions = tuple(AlertRegion(f"class {c}", (c,), (c,), (0, 0, 4, 4)) for c in range(4))
    asked: list[int] = []

    def verify(regions: tuple, ignored: torch.Tensor | None, origin: int) -> FollowTest:
        asked.append(regions[0].classes[0])
        return _verdict(False, 0, 0)  # followed by none: every region stays named, the untested without an answer

    named = followed_regions(regions, verify, 2)
    assert asked == [0, 1] and [r.classes for r in named] == [(0,), (1,), (2,), (3,)]
    assert [r.follow is None for r in named] == [False, False, True, True]
    # the model follows class 1 alone: class 0 (asked, not followed) is not named; 2 and 3 (never asked) still are
    answers = {0: _verdict(False, 0, 0), 1: _verdict(False, 3, 0)}
    named = followed_regions(regions, lambda r, q, o: answers[r[0].classes[0]], 2)
    assert [(r.classes, r.follow) for r in named] == [((1,), answers[1]), ((2,), None), ((3,), None)]


def test_the_regions_named_are_followed_by_more_than_a_coin_flip_and_the_surest_come_first() -> None:
    """One pair gained and none lost is a coin flip (p = 1/2): not named while other regions are followed; the named
    ones are ordered by their own p-value (the alert's ``region`` and its message's first place), ties kept in order."""
    regions = tuple(AlertRegion(f"class {c}", (c,), (c,), (0, 0, 4, 4)) for c in range(4))
    answers = {
        0: FollowTest("region", 9, 1, 0, 1, 0, 0.5, False, 2),  # 1 gained: a coin flip
        1: FollowTest("region", 9, 2, 0, 2, 0, 0.25, False, 2),
        2: FollowTest("region", 9, 5, 0, 5, 0, 0.03125, False, 2),
        3: FollowTest("region", 9, 2, 0, 2, 0, 0.25, False, 2),
    }
    named = followed_regions(regions, lambda r, q, o: answers[r[0].classes[0]], 2)
    assert [r.classes for r in named] == [(2,), (1,), (3,)]
    only_flips = followed_regions(regions[:1], lambda r, q, o: answers[0], 2)  # none followed: all named, answered
    assert [(r.classes, r.follow) for r in only_flips] == [((0,), answers[0])]


def test_a_region_whose_own_test_fails_stays_named_and_the_alert_still_comes() -> None:
    def verify(regions: tuple, ignored: torch.Tensor | None, origin: int) -> FollowTest:
        if ignored is None:
            if regions[0].classes == (0,):
                raise RuntimeError("out of memory (a region alone)")
            return _verdict(False, 2, 0)
        return _verdict(True) if origin >= 4 else _verdict(False, 0, 2)

    detector, classes = ShiftDetector(calibration=2), torch.arange(8) % 4
    found = [
        detector.update("m", m, (32, 32), True, classes=classes, epoch=e, verify=verify) for e, m in enumerate(_maps())
    ]
    assert found[5].fired and found[5].follow == _verdict(True)
    named = {r.classes: r.follow for r in found[5].regions}
    assert named == {(0,): None, (1,): _verdict(False, 2, 0), (2,): _verdict(False, 2, 0), (3,): _verdict(False, 2, 0)}
