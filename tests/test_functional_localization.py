"""Tests for lightning_xai.functional.localization (relevance mass accuracy, pointing game)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from lightning_xai.functional import pointing_game, relevance_mass

# Two hand-made 4x4 maps and masks.
#   sample 0: |A| total 20, 14 of it inside the mask (top-left 2x2), max (8) inside.
#   sample 1: |A| total 10, 2 of it inside the mask (bottom row), max (5) outside.
ATTR = torch.tensor(
    [
        [
            [8.0, -2.0, 0.0, 0.0],
            [0.0, 4.0, 0.0, 1.0],
            [0.0, 0.0, -3.0, 0.0],
            [2.0, 0.0, 0.0, 0.0],
        ],
        [
            [0.0, 0.0, 0.0, -5.0],
            [0.0, 3.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, -1.0, 0.0, 1.0],
        ],
    ]
)
MASK = torch.zeros(2, 4, 4, dtype=torch.bool)
MASK[0, :2, :2] = True
MASK[1, 3, :] = True


def test_relevance_mass_hand_made() -> None:
    result = relevance_mass(ATTR, MASK)
    assert result.dtype == torch.float32 and result.shape == (2,)
    assert torch.allclose(result, torch.tensor([14 / 20, 2 / 10]))


def test_pointing_game_hand_made() -> None:
    result = pointing_game(ATTR, MASK)
    assert result.dtype == torch.float32
    assert torch.equal(result, torch.tensor([1.0, 0.0]))


def test_channels_are_summed_as_magnitudes() -> None:
    # channel 0: max of |A| alone would be at (0, 0) (outside the mask); summed over channels it is (3, 3).
    attr = torch.zeros(1, 3, 4, 4)
    attr[0, 0, 0, 0] = 5.0
    attr[0, 0, 3, 3] = 3.0
    attr[0, 1, 3, 3] = -3.0  # would cancel the +3 if signs were summed before |.|
    attr[0, 2, 1, 1] = -2.0
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 3, 3] = True
    assert pointing_game(attr, mask).item() == 1.0
    assert relevance_mass(attr, mask).item() == pytest.approx(6 / 13)
    # same as the already channel-merged map
    merged = attr.abs().sum(dim=1)
    assert relevance_mass(merged, mask).item() == pytest.approx(6 / 13)


def test_pointing_game_ties_at_max() -> None:
    attr = torch.zeros(2, 4, 4)
    attr[:, 0, 0] = 7.0
    attr[:, 2, 3] = -7.0
    attr[:, 1, 1] = 6.0
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 2, 3] = True  # one of the tied maxima
    mask[1, 1, 1] = True  # only the runner-up
    assert torch.equal(pointing_game(attr, mask), torch.tensor([1.0, 0.0]))


def test_all_zero_maps() -> None:
    attr = torch.zeros(2, 2, 4, 4)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    assert torch.equal(relevance_mass(attr, mask), torch.zeros(2))
    assert torch.equal(pointing_game(attr, mask), torch.zeros(2))
    mixed = ATTR.clone()
    mixed[1] = 0.0
    assert torch.equal(pointing_game(mixed, MASK), torch.tensor([1.0, 0.0]))
    assert torch.allclose(relevance_mass(mixed, MASK), torch.tensor([0.7, 0.0]))


def test_mask_layouts_and_dtypes() -> None:
    expected_mass = relevance_mass(ATTR, MASK)
    expected_hits = pointing_game(ATTR, MASK)
    for mask in (MASK.unsqueeze(1), MASK.float(), MASK.long(), MASK.unsqueeze(1).to(torch.uint8)):
        assert torch.equal(relevance_mass(ATTR, mask), expected_mass)
        assert torch.equal(pointing_game(ATTR, mask), expected_hits)
    # attribution dtypes and the 4-D layout with a single channel
    assert torch.allclose(relevance_mass(ATTR.unsqueeze(1).double(), MASK), expected_mass)
    assert torch.equal(pointing_game(ATTR.half(), MASK), expected_hits)


def test_full_and_empty_masks() -> None:
    assert torch.allclose(relevance_mass(ATTR, torch.ones(2, 4, 4)), torch.ones(2))
    assert torch.equal(relevance_mass(ATTR, torch.zeros(2, 4, 4)), torch.zeros(2))
    assert torch.equal(pointing_game(ATTR, torch.ones(2, 4, 4)), torch.ones(2))
    assert torch.equal(pointing_game(ATTR, torch.zeros(2, 4, 4)), torch.zeros(2))


def test_nan_attributions_propagate() -> None:
    attr = ATTR.clone()
    attr[0, 2, 2] = math.nan
    mass, hits = relevance_mass(attr, MASK), pointing_game(attr, MASK)
    assert mass[0].isnan() and hits[0].isnan()
    assert mass[1].item() == pytest.approx(0.2) and hits[1].item() == 0.0


@pytest.mark.parametrize("fn", [relevance_mass, pointing_game])
def test_argument_errors(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    with pytest.raises(ValueError, match=r"same spatial shape.*\(2, 4, 4\).*\(2, 4, 5\)"):
        fn(ATTR, torch.zeros(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"same spatial shape.*\(2, 3, 4, 4\).*\(2, 1, 5, 4\)"):
        fn(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 5, 4))
    with pytest.raises(ValueError, match=r"same batch size.*\(2, 4, 4\).*\(3, 4, 4\)"):
        fn(ATTR, torch.zeros(3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"`attributions` must have shape \(N, H, W\) or \(N, C, H, W\).*\(4, 4\)"):
        fn(ATTR[0], MASK[0])
    with pytest.raises(ValueError, match=r"`masks` must have shape \(N, H, W\) or \(N, 1, H, W\).*\(2, 3, 4, 4\)"):
        fn(ATTR, torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"`masks` must be boolean or contain only 0 and 1"):
        fn(ATTR, MASK.float() * 0.5)
    with pytest.raises(TypeError, match=r"`masks` must be a torch.Tensor"):
        fn(ATTR, MASK.tolist())  # type: ignore[arg-type]
