"""The cheaper paths of the pictures and the drift give the same pixels and values as the straightforward ones: texts
composed from cached glyph masks are what ``ImageDraw.text`` draws, a text blended into an array is what Pillow's
paste gives, widths are FreeType's, and the tracker's numpy statistics are torch's."""

from __future__ import annotations

import math
import random
import string

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lightning_xai.drift.tracker import DriftTracker, _median
from lightning_xai.functional import drift as functional
from lightning_xai.visualize import text

TEXTS = [
    "drift 1.23",  # "ft" overlap: Pillow lays the later glyph over the earlier
    "vs ref 0.48",
    "#3   label 7   ",
    "   conf 0.50",
    "epoch 12   step 480   ALERT: gradcam, integrated_gradients (see xai/alerts)",
    "fiffl jfj Tj Wa AV yy [x]{y}/\\|~`@",
]


def _random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.printable[:95] + "   "
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(count)]


@pytest.mark.parametrize("x", [10.0, 10.7, 146.25, 282.9])
def test_a_composed_text_is_what_imagedraw_draws(x: float) -> None:
    text._stamp.cache_clear()
    for line in TEXTS + _random_texts(60, seed=int(x)):
        drawn, stamped = (Image.new("RGB", (900, 30), (255, 255, 255)) for _ in range(2))
        ImageDraw.Draw(drawn).text((x, 6), line, fill=(204, 13, 13), font=text._font())
        text.put(stamped, x, 5, line, (0.80, 0.05, 0.05))
        assert np.array_equal(np.asarray(drawn), np.asarray(stamped)), line


def test_widths_are_freetypes() -> None:
    for line in TEXTS + _random_texts(200, seed=1):
        assert text.text_width(line) == float(text._font().getlength(line)), line


@pytest.mark.parametrize("x, y", [(10.0, 5), (3.4, -6), (-8.5, 2), (170.6, 20), (190.0, 28)])
def test_a_text_blended_into_an_array_is_what_pillow_pastes(x: float, y: int) -> None:
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (30, 200, 3), dtype=np.uint8)
    for line, colour in zip(TEXTS, [(0.08, 0.08, 0.08), (0.8, 0.05, 0.05), (0.38, 0.38, 0.38)] * 2, strict=True):
        pasted = Image.fromarray(background)
        text.put(pasted, x, y, line, colour)
        blended = np.concatenate([background, np.full((30, 200, 1), 255, np.uint8)], axis=2)  # RGBX
        assert text.put_array(blended, x, y, line, colour) == x + text.text_width(line)
        assert np.array_equal(blended[..., :3], np.asarray(pasted)), line
        assert (blended[..., 3] == 255).all()


def test_the_tracker_median_is_torch_quantile_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 4, 5, 10, 16, 17):
        for values in (rng.random(size) * 2, np.round(rng.random(size), 1), np.full(size, 0.3)):
            expected = float(torch.quantile(torch.from_numpy(values), 0.5).float())
            assert _median(values) == expected
        values[0] = math.nan
        assert math.isnan(_median(values))


def test_the_numpy_comparisons_are_the_torch_ones_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    for shape in ((5, 6, 6), (10, 32, 32), (3, 1, 7)):
        current = torch.randint(-3, 4, shape, generator=g).float() * (torch.rand(shape, generator=g) < 0.6)
        other = torch.randn(shape, generator=g)
        current[0] = 0.5  # a constant map
        rows = [functional.magnitudes("maps", m) for m in (current, other)]
        ranks = [functional._centered_ranks(r) for r in rows]
        cpu = functional._spearman_from_ranks(*ranks)
        torch_path = (  # the accelerator path's arithmetic, on the CPU
            1
            - (ranks[0][0] * ranks[1][0]).sum(dim=1)
            / torch.where(
                ranks[0][1] | ranks[1][1], 1.0, (ranks[0][0].square().sum(1) * ranks[1][0].square().sum(1)).sqrt()
            )
        ).clamp(0.0, 2.0)
        torch_path = torch.where(ranks[0][1] | ranks[1][1], (~(ranks[0][1] & ranks[1][1])).double(), torch_path)
        assert torch.equal(cpu, torch_path)
    tracker = DriftTracker(warmup_epochs=0)
    maps = torch.rand(4, 5, 5, generator=g)
    tracker.update("m", 0, maps)
    later = torch.rand(4, 5, 5, generator=g)
    tracker.update("m", 1, later)
    measured = tracker.reference_drift("m", later)
    assert measured is not None and torch.equal(measured, tracker.distances(later, tracker.reference["m"])["rank"])
    assert tracker.reference_drift("m", later.clone()) is None  # another tensor: not what update measured
