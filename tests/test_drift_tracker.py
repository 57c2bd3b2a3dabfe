"""The drift tracker ranks each map once and keeps the stored maps' ranks: its drift stays the functional one."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_xai.drift.tracker import DriftTracker
from lightning_xai.functional import average_ranks, spearman_distance, topk_iou_distance
from lightning_xai.functional import drift as functional_drift


def _maps(seed: int, shape: tuple[int, ...] = (5, 6, 6)) -> torch.Tensor:
    """Signed maps with exact zeros, repeated magnitudes, a constant probe and (seed 3) a NaN."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randint(-4, 5, shape, generator=g).float() * torch.rand(shape, generator=g).round(decimals=1)
    maps[1] = 0.5 if seed % 2 else maps[1]
    if seed == 3:
        maps[2, 0, 0] = math.nan
    return maps


def _assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


def _count_sorts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    ranks = functional_drift._average_ranks

    def counted(values: torch.Tensor) -> torch.Tensor:
        calls.append(len(values))
        return ranks(values)

    monkeypatch.setattr(functional_drift, "_average_ranks", counted)
    return calls


def test_tracker_drift_equals_the_functional_metrics_from_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = DriftTracker(warmup_epochs=0, reference_epoch=1, topk=0.2)
    sorts = _count_sorts(monkeypatch)
    previous: dict[str, torch.Tensor] = {}
    reference: dict[str, torch.Tensor] = {}
    shapes = [(5, 6, 6)] * 4 + [(5, 4, 4)] * 3  # the layer changes at epoch 4: previous and reference restart
    for epoch, shape in enumerate(shapes):
        for method, seed in (("gradcam", epoch), ("integrated_gradients", epoch + 10)):
            maps = _maps(seed, shape)
            before = len(sorts)
            result = tracker.update(method, epoch, maps)
            assert len(sorts) == before + 1  # the new map only: the stored ones keep their ranks
            stored = {k: v for k, v in (("previous", previous.get(method)), ("reference", reference.get(method)))}
            for name, other in stored.items():
                if other is None or other.shape != maps.shape:
                    assert f"rank_vs_{name}" not in result.per_probe or name == "reference"
                    continue
                _assert_same(result.per_probe[f"rank_vs_{name}"], spearman_distance(maps, other))
                _assert_same(result.per_probe[f"topk_vs_{name}"], topk_iou_distance(maps, other, k=0.2))
                d = spearman_distance(maps, other).double()
                median = pytest.approx(float(torch.quantile(d, 0.5).float()), rel=0, abs=0, nan_ok=True)
                assert result.statistics[f"rank_vs_{name}/median"] == median
            if method not in reference or reference[method].shape != shape:
                if epoch >= 1:  # pinned at epoch 1, pinned again at the first evaluation after the restart
                    reference[method] = maps.clone()
            previous[method] = maps.clone()
    assert tracker.reference_epochs == {"gradcam": 4, "integrated_gradients": 4}
    assert set(tracker.state_dict()) == {"reference", "reference_epochs", "previous"}  # maps only, no ranks


def test_a_loaded_tracker_ranks_the_stored_maps_again_and_gives_the_same_drift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = DriftTracker(warmup_epochs=1)
    for epoch in range(3):
        running.update("gradcam", epoch, _maps(epoch))
    loaded = DriftTracker(warmup_epochs=1)
    loaded.load_state_dict(running.state_dict())
    sorts = _count_sorts(monkeypatch)
    after_load = loaded.update("gradcam", 3, _maps(7))
    assert len(sorts) == 3  # the new map, then the loaded previous and reference, once each
    continued = running.update("gradcam", 3, _maps(7))
    assert len(sorts) == 4
    loaded.update("gradcam", 4, _maps(8))  # the loaded reference stays ranked: one sort, the new map's
    assert len(sorts) == 5
    assert after_load.statistics == continued.statistics
    for key, values in continued.per_probe.items():
        _assert_same(after_load.per_probe[key], values)


def test_distances_against_a_stored_map_sort_only_the_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = DriftTracker(warmup_epochs=0)
    tracker.update("gradcam", 0, _maps(0))
    current = _maps(5)
    expected = {"rank": spearman_distance(current, _maps(0)), "topk": topk_iou_distance(current, _maps(0), k=0.1)}
    sorts = _count_sorts(monkeypatch)
    found = tracker.distances(current, tracker.reference["gradcam"])
    assert len(sorts) == 1
    for metric, values in expected.items():
        _assert_same(found[metric], values)
    tracker.distances(current, _maps(0))  # an equal map that is not a stored one: sorted too
    assert len(sorts) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the accelerator path (torch's sort and topk) needs CUDA")
def test_accelerator_path_equals_the_cpu_path() -> None:
    current, reference = _maps(3, (6, 16, 16)), _maps(4, (6, 16, 16))
    cuda = [t.cuda() for t in (current, reference)]
    _assert_same(average_ranks(current.flatten(1).cuda()).cpu(), average_ranks(current.flatten(1)))
    _assert_same(spearman_distance(*cuda).cpu(), spearman_distance(current, reference))
    for k in (0.05, 0.1, 0.5):
        _assert_same(topk_iou_distance(*cuda, k=k).cpu(), topk_iou_distance(current, reference, k=k))


def test_distances_refuse_maps_of_two_shapes() -> None:
    with pytest.raises(ValueError, match=r"`current` \(1, 4, 4\) and `other` \(3, 4, 4\) must have one shape"):
        DriftTracker().distances(torch.rand(1, 4, 4), torch.rand(3, 4, 4))  # would broadcast otherwise
