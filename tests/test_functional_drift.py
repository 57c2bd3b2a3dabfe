"""Tests for lightning_xai.functional.drift against scipy and brute-force reference implementations."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from lightning_xai.functional import average_ranks, spearman_distance, topk_iou_distance


def _sparse_maps(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Signed maps with many exact zeros (like IG on a black background) and repeated magnitudes."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(-3, 4, (n, *shape), generator=g).float()
    zero = torch.rand(n, *shape, generator=g) < 0.5
    return values.masked_fill(zero, 0.0)


# ----------------------------------------------------------------------------------------- average_ranks


def test_average_ranks_hand_made() -> None:
    values = torch.tensor([[10.0, 20.0, 10.0, 5.0, 20.0, 10.0], [3.0, 2.0, 1.0, 0.0, -1.0, -2.0]])
    expected = torch.tensor([[3.0, 5.5, 3.0, 1.0, 5.5, 3.0], [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    ranks = average_ranks(values)
    assert ranks.dtype == torch.float32
    assert torch.equal(ranks, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_ranks_matches_scipy_with_ties(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 5, (6, 50), generator=g)
    ranks = average_ranks(values)
    expected = np.stack([rankdata(row, method="average") for row in values.numpy()])
    np.testing.assert_array_equal(ranks.numpy(), expected)


def test_average_ranks_matches_scipy_float_data() -> None:
    g = torch.Generator().manual_seed(3)
    values = torch.randn(5, 200, generator=g, dtype=torch.float64)
    values[:, ::7] = values[:, :1]  # plant some ties among the floats too
    ranks = average_ranks(values)
    expected = np.stack([rankdata(row, method="average") for row in values.numpy()])
    np.testing.assert_array_equal(ranks.numpy(), expected)


def test_average_ranks_all_equal_and_single_column() -> None:
    assert torch.equal(average_ranks(torch.full((2, 4), 7.0)), torch.full((2, 4), 2.5))
    assert torch.equal(average_ranks(torch.tensor([[5.0], [-1.0]])), torch.ones(2, 1))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_average_ranks_rejects_non_2d(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"`values` must be 2-D.*got shape"):
        average_ranks(torch.zeros(shape))


# ------------------------------------------------------------------------------------- spearman_distance


def _scipy_spearman_distance(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    rows_a = a.abs().reshape(a.shape[0], -1).double().numpy()
    rows_b = b.abs().reshape(b.shape[0], -1).double().numpy()
    return np.array([1.0 - spearmanr(x, y).statistic for x, y in zip(rows_a, rows_b, strict=True)])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_spearman_matches_scipy_with_heavy_ties(seed: int) -> None:
    current = _sparse_maps(8, (6, 7), seed)
    reference = _sparse_maps(8, (6, 7), seed + 100)
    reference[:2] = -current[:2] * 2  # correlated rows too, not only unrelated ones
    result = spearman_distance(current, reference)
    assert result.shape == (8,) and result.dtype == torch.float32
    np.testing.assert_allclose(result.numpy(), _scipy_spearman_distance(current, reference), atol=1e-5)
    assert torch.allclose(result[:2], torch.zeros(2), atol=1e-6)


def test_spearman_matches_scipy_on_float_maps_with_channels() -> None:
    g = torch.Generator().manual_seed(7)
    current = torch.randn(4, 3, 5, 5, generator=g)
    reference = current + 0.5 * torch.randn(4, 3, 5, 5, generator=g)
    current[:, :, :2] = 0.0  # black band: many exact zeros in both maps
    result = spearman_distance(current, reference)
    assert result.shape == (4,)
    np.testing.assert_allclose(result.numpy(), _scipy_spearman_distance(current, reference), atol=1e-5)


def test_spearman_hand_made_values() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    assert spearman_distance(a, a).item() == 0.0
    assert spearman_distance(a, a.flip(1)).item() == pytest.approx(2.0, abs=1e-7)
    assert spearman_distance(a, -a).item() == 0.0  # sign flip: magnitudes unchanged
    assert spearman_distance(a, a * torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0]])).item() == 0.0
    # ranks (1,2,3,4,5) vs (2,1,3,4,5): rho = 1 - 6*2 / (5*24) = 0.9
    b = torch.tensor([[2.0, 1.0, 3.0, 4.0, 5.0]])
    assert spearman_distance(a, b).item() == pytest.approx(0.1, abs=1e-6)


def test_spearman_constant_rows() -> None:
    varying = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    zeros = torch.zeros(1, 4)
    const = torch.full((1, 4), -2.0)
    assert spearman_distance(zeros, zeros).item() == 0.0
    assert spearman_distance(zeros, const).item() == 0.0  # both constant: nothing moved
    assert spearman_distance(varying, zeros).item() == 1.0
    assert spearman_distance(zeros, varying).item() == 1.0
    # |[-2, 2, 2, -2]| is constant although the signed row is not
    assert spearman_distance(torch.tensor([[-2.0, 2.0, 2.0, -2.0]]), varying).item() == 1.0


def test_spearman_never_nan_and_in_range() -> None:
    current = _sparse_maps(32, (3, 3), seed=11)
    reference = _sparse_maps(32, (3, 3), seed=12)
    current[:4] = 0.0
    reference[2:6] = 1.0
    result = spearman_distance(current, reference)
    assert not result.isnan().any()
    assert bool(((result >= 0) & (result <= 2)).all())
    assert torch.equal(result[2:4], torch.zeros(2))  # zero map vs constant map: both constant
    assert torch.equal(result[[0, 1, 4, 5]], torch.ones(4))  # exactly one constant


def test_spearman_any_trailing_shape_and_dtype() -> None:
    g = torch.Generator().manual_seed(5)
    maps = torch.randn(3, 2, 4, 4, generator=g)
    other = torch.randn(3, 2, 4, 4, generator=g)
    flat = spearman_distance(maps.reshape(3, -1), other.reshape(3, -1))
    assert torch.allclose(spearman_distance(maps, other), flat)
    assert torch.allclose(spearman_distance(maps.reshape(3, 8, 4), other.reshape(3, 8, 4)), flat)
    result = spearman_distance(maps.half(), other.half())  # low-precision input still returns float32
    assert result.dtype == torch.float32
    integers = spearman_distance(torch.randint(-4, 5, (3, 9), generator=g), torch.randint(-4, 5, (3, 9), generator=g))
    assert integers.dtype == torch.float32 and not integers.isnan().any()


def test_spearman_nan_input_propagates() -> None:
    current = torch.tensor([[1.0, math.nan, 3.0], [1.0, 2.0, 3.0]])
    result = spearman_distance(current, torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    assert result[0].isnan() and result[1].item() == 0.0


def test_spearman_large_maps_run() -> None:
    g = torch.Generator().manual_seed(0)
    current = torch.randn(8, 224, 224, generator=g).clamp_min(0)  # half the cells exactly zero
    reference = current + 0.1 * torch.randn(8, 224, 224, generator=g)
    result = spearman_distance(current, reference)
    assert result.shape == (8,)
    assert bool(((result > 0) & (result < 0.5)).all())
    expected = 1.0 - spearmanr(current[0].abs().flatten().numpy(), reference[0].abs().flatten().numpy()).statistic
    assert result[0].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("fn", [spearman_distance, topk_iou_distance])
def test_drift_argument_errors(fn: Callable[..., torch.Tensor]) -> None:
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3\).*\(2, 4\)"):
        fn(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"ndim >= 2.*\(5,\)"):
        fn(torch.zeros(5), torch.zeros(5))
    with pytest.raises(ValueError, match=r"ndim >= 2.*\(\)"):
        fn(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"at least one cell"):
        fn(torch.zeros(2, 0), torch.zeros(2, 0))
    with pytest.raises(TypeError, match=r"`reference` must be a torch.Tensor"):
        fn(torch.zeros(2, 3), [[0.0] * 3] * 2)


# ------------------------------------------------------------------------------------- topk_iou_distance


def _brute_topk_iou_distance(current: torch.Tensor, reference: torch.Tensor, k: float) -> list[float]:
    """The definition, one sample and one cell at a time."""

    def top_set(row: list[float]) -> set[int]:
        count = min(len(row), max(1, math.ceil(round(k * len(row), 9))))
        kth_largest = sorted(row, reverse=True)[count - 1]
        return {i for i, v in enumerate(row) if v >= kth_largest and v > 0}

    out = []
    for a, b in zip(
        current.reshape(len(current), -1).tolist(),
        reference.reshape(len(reference), -1).tolist(),
        strict=True,
    ):
        set_a, set_b = top_set([abs(v) for v in a]), top_set([abs(v) for v in b])
        union = set_a | set_b
        out.append(0.0 if not union else 1.0 - len(set_a & set_b) / len(union))
    return out


@pytest.mark.parametrize("k", [0.05, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_topk_iou_matches_brute_force(k: float, seed: int) -> None:
    current = _sparse_maps(10, (2, 5, 6), seed)
    reference = _sparse_maps(10, (2, 5, 6), seed + 50)
    reference[0] = -current[0]
    reference[1] = 0.0
    current[2] = 0.0
    reference[2] = 0.0
    g = torch.Generator().manual_seed(seed)
    current[5:] = torch.randn(5, 2, 5, 6, generator=g)  # ties-free float rows as well
    reference[5:] = current[5:] + torch.randn(5, 2, 5, 6, generator=g)
    result = topk_iou_distance(current, reference, k=k)
    assert result.shape == (10,) and result.dtype == torch.float32
    expected = torch.tensor(_brute_topk_iou_distance(current, reference, k), dtype=torch.float32)
    assert torch.allclose(result, expected, atol=1e-6), (result, expected)
    assert result[0].item() == 0.0 and result[2].item() == 0.0


def test_topk_iou_hand_made_values() -> None:
    a = torch.tensor([[9.0, 8.0, 7.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, -8.0, 7.0, 9.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    # k = 0.3 → 3 cells: {0, 1, 2} vs {1, 2, 3} → IoU 2 / 4
    assert topk_iou_distance(a, b, k=0.3).item() == pytest.approx(0.5)
    assert topk_iou_distance(a, a, k=0.3).item() == 0.0
    assert topk_iou_distance(a, -a, k=0.3).item() == 0.0
    # k = 0.4 → 4 cells, but the 4th largest (1.0) is tied: a keeps {0..5}, b keeps {1..5} → IoU 5 / 6
    assert topk_iou_distance(a, b, k=0.4).item() == pytest.approx(1 - 5 / 6)
    # k = 1.0 → every non-zero cell: {0..5} vs {1..5}
    assert topk_iou_distance(a, b, k=1.0).item() == pytest.approx(1 - 5 / 6)
    # k * D = 0.07 * 100 is 7.000000000000001 in floats: still 7 cells, not 8
    c = torch.arange(100.0, 0.0, -1.0).unsqueeze(0)
    d = torch.cat([c[:, :6], c[:, 7:8], c[:, 6:7], c[:, 8:]], dim=1)  # swap ranks 7 and 8
    assert topk_iou_distance(c, d, k=0.07).item() == pytest.approx(1 - 6 / 8)


def test_topk_iou_empty_sets() -> None:
    zeros = torch.zeros(1, 8)
    some = torch.tensor([[0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    assert topk_iou_distance(zeros, zeros).item() == 0.0
    assert topk_iou_distance(zeros, some).item() == 1.0
    assert topk_iou_distance(some, zeros).item() == 1.0
    # k=0.5 → 4 cells, but only one is non-zero: the set is {2} alone
    assert topk_iou_distance(some, some * 2 + torch.tensor([[0.0, 0, 0, 1, 0, 0, 0, 0]]), k=0.5).item() == (
        pytest.approx(0.5)
    )


@pytest.mark.parametrize("k", [0.0, -0.1, 1.5, math.nan, True, "0.1"])
def test_topk_iou_rejects_bad_k(k: object) -> None:
    with pytest.raises(ValueError, match=r"`k` must be a fraction in \(0, 1\]; got"):
        topk_iou_distance(torch.ones(2, 4), torch.ones(2, 4), k=k)  # type: ignore[arg-type]


def test_topk_iou_nan_input_propagates() -> None:
    current = torch.tensor([[1.0, math.nan, 3.0], [1.0, 2.0, 3.0]])
    result = topk_iou_distance(current, torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), k=0.5)
    assert result[0].isnan() and result[1].item() == 0.0


def test_pinned_reference_falls_to_the_next_evaluated_epoch() -> None:
    from lightning_xai.drift.tracker import DriftTracker

    tracker = DriftTracker(reference_epoch=2)
    maps = torch.rand(3, 4, 4)
    tracker.update("m", 1, maps)
    assert tracker.reference_epochs == {}
    tracker.update("m", 3, maps)  # the method did not run at epoch 2
    assert tracker.reference_epochs == {"m": 3}
    tracker.update("m", 4, torch.rand(3, 4, 4))
    assert tracker.reference_epochs == {"m": 3}


def test_a_pinned_reference_inside_the_warm_up_arms_the_rules_only_after_it() -> None:
    from lightning_xai.drift.tracker import DriftTracker

    tracker = DriftTracker(warmup_epochs=3, reference_epoch=0)
    armed = [tracker.update("m", epoch, torch.rand(3, 4, 4)).alerts_armed for epoch in range(5)]
    assert tracker.reference_epochs == {"m": 0}
    assert armed == [False, False, False, True, True]  # warmup_epochs: "epochs the detector and rules ignore"
    tracker = DriftTracker(warmup_epochs=1, reference_epoch=2)
    assert [tracker.update("m", epoch, torch.rand(3, 4, 4)).alerts_armed for epoch in range(4)] == [
        False, False, False, True
    ]  # fmt: skip


def test_the_rules_are_armed_from_the_evaluation_after_the_reference_in_the_same_epoch() -> None:
    """``val_check_interval=0.5``: two evaluations per epoch; the second of the reference's epoch is compared with it
    and armed (it was not: the arming compared epochs, so a one-epoch run could never alert)."""
    from lightning_xai.drift.tracker import DriftTracker

    tracker = DriftTracker(warmup_epochs=0)
    first, second = (tracker.update("m", 0, torch.rand(3, 4, 4)) for _ in range(2))
    assert tracker.reference_epochs == {"m": 0} and not first.alerts_armed
    assert second.alerts_armed and second.statistics["rank_vs_reference/median"] > 0
