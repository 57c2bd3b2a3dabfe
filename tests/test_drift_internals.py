"""Internal helpers of drift/, functional/ and probes/ (the examples that used to live in their docstrings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_xai.drift.detector import ShiftDetector, t_quantile
from lightning_xai.drift.evidence import cell_span, input_maps, place_name
from lightning_xai.functional.shift import novel_relevance, peak_region, quiet_regions, relevance_distribution
from lightning_xai.probes.collect import balanced_order, split_example
from lightning_xai.probes.inputs import check_images, check_labels, describe, one_class


def test_input_maps_take_magnitudes_and_sum_to_one_per_probe() -> None:
    maps = input_maps(torch.tensor([[[0.0, -2.0], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]]), (2, 2))
    assert maps.dtype == torch.float32
    assert maps.tolist() == [[[0.0, 0.5], [0.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]]  # all-zero: no relevance anywhere
    assert input_maps(torch.rand(3, 4, 4), (8, 12)).shape == (3, 8, 12)  # resized to the input


def test_cell_span_covers_the_pixels_adaptive_pooling_gives_the_cells() -> None:
    assert (cell_span(0, 0, 8, 32), cell_span(7, 7, 8, 32), cell_span(1, 2, 3, 10)) == ((0, 4), (28, 32), (3, 10))


def test_place_names_by_the_third_the_centre_lies_in() -> None:
    size = (32, 32)
    names = [place_name(box, size) for box in ((1, 1, 5, 5), (12, 26, 20, 32), (0, 0, 30, 32), (26, 12, 30, 20))]
    assert names == ["top-left", "right", "most of the image", "bottom"]


def test_threshold_and_t_quantile() -> None:
    assert ShiftDetector().threshold([0.002, -0.004, 0.003], standard_error=0.005, probes=10) == (0.016239, 0.005)
    assert ShiftDetector(calibration=4).threshold([0.002], standard_error=0.005, probes=10) == (None, None)
    assert round(t_quantile(0.995, 9), 2) == 3.25 and t_quantile(0.995, 2) == float("inf")


def test_shift_functions_on_tiny_maps() -> None:
    dist = relevance_distribution(torch.tensor([[[0.0, 2.0], [0.0, 2.0]]]), cells=2)
    assert dist.dtype == torch.float64 and dist.tolist() == [[[0.0, 0.5], [0.0, 0.5]]]
    before = torch.tensor([[[0.7, 0.1], [0.1, 0.1]]])
    assert quiet_regions(before).tolist() == [[[False, True], [True, True]]]
    older = torch.tensor([[[0.1, 0.1], [0.1, 0.7]]])
    assert quiet_regions(before, older=older).tolist() == [[[False, True], [True, False]]]
    after = torch.tensor([[[0.4, 0.1], [0.1, 0.4]]])  # a quiet corner lights up
    assert novel_relevance(after, before).item() == pytest.approx(0.3) and novel_relevance(before, before).item() == 0
    gain = torch.zeros(6, 6)
    gain[0, 0], gain[1, 1], gain[5, 5] = 0.4, 0.3, 0.35
    assert peak_region(gain) == (0, 0, 1, 1)  # corners touch; the far cell is another blob
    with pytest.raises(ValueError, match=r"`maps` must have shape \(N, H, W\)"):
        relevance_distribution(torch.zeros(2, 2))


def test_split_example_and_balanced_order() -> None:
    x, y = split_example((torch.zeros(1, 4, 4), 3))
    assert tuple(x.shape) == (1, 4, 4) and y == 3
    x, y = split_example({"pixel_values": torch.ones(2), "targets": 5})
    assert x.tolist() == [1.0, 1.0] and y == 5
    assert split_example(np.zeros((2, 2), dtype=np.uint8))[0].dtype == torch.uint8
    assert balanced_order([1, 1, 0, 2, 0, 1], 4) == [2, 0, 3, 4]  # round-robin over classes 0, 1, 2


def test_probe_inputs_are_described_converted_and_refused() -> None:
    assert describe(torch.zeros(2, 3, dtype=torch.uint8)) == "a tensor of shape (2, 3) and dtype torch.uint8"
    assert describe(np.zeros(2)) == "a numpy array of shape (2,) and dtype float64" and describe("2") == "'2' (str)"
    assert [one_class(v)[0].item() for v in (3, torch.tensor(2.0), torch.tensor([0, 0, 1]))] == [3, 2, 2]
    why = "multi-hot or soft labels (a vector with 2 non-zero entries), not one class"
    assert one_class(torch.tensor([1, 0, 1])) == (None, why)
    assert check_labels(np.eye(3)[[2, 0]], 2).tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"`probes` are integer images \(torch.uint8\)"):
        check_images(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
