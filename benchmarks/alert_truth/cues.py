"""The cues of the suite: each paints the cue of class ``codes[i]`` (its *code*) on digit image ``i``.

Gray cues (``(N, 1, 32, 32)`` in, ``(N, 1, 32, 32)`` out, all in ``[0, 1]``):

* ``corner_patch``: the decoy patch of :mod:`examples.shortcut.decoy_digits` (corner and intensity spell the class).
* ``texture``: a faint class-specific stripe grating over the background (5 orientations x 2 periods), painted as
  ``max(digit, grating)`` so that it shows only where the digit is darker; not localised (no mask).
* ``position_mark``: a 3x3 bright mark on the image border whose *position* (10 spots evenly around the border)
  spells the class; the intensity is the same for every class.

Colour cues (``(N, 1, 32, 32)`` gray digits in, ``(N, 3, 32, 32)`` RGB out): the code is one of 10 colours, hues
evenly spaced around the colour wheel (36 degrees apart, :func:`palette`).

* ``background_colour`` (Waterbirds-like): the background (where the digit is dark) is tinted with the code's colour,
  ``digit + (1 - digit) * colour`` (saturation 0.5, value 0.6: the white strokes stay well visible); not localised.
* ``object_colour`` (Colored-MNIST-like): the strokes are painted in the code's colour on black,
  ``digit * colour`` (saturation 0.8, value 1.0); not localised (the cue is the digit's own pixels).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

from examples.shortcut.decoy_digits import DecoySpec, decoy_for_labels, decoy_masks, stamp_decoy

SIZE = 32
NUM_CLASSES = 10
#: the gray cues; benign scenarios without a cue of their own rotate through them (``CUES[seed % 3]``)
CUES = ("corner_patch", "texture", "position_mark")
#: the colour cues (3-channel images: the cnn and vgg families then take 3 input channels)
COLOUR_CUES = ("background_colour", "object_colour")


class Cue:
    """Paints the cue of class ``codes[i]`` on image ``i`` (``(N, 1, 32, 32)`` in ``[0, 1]``)."""

    name = ""
    localised = True
    channels = 1  # of the stamped images (3 for a colour cue)

    def stamp(self, images: Tensor, codes: Tensor) -> Tensor:
        raise NotImplementedError

    def masks(self, codes: Tensor) -> Tensor | None:
        """Boolean ``(N, 32, 32)`` masks of the cue pixels, or ``None`` for a cue spread over the image."""
        raise NotImplementedError


class CornerPatch(Cue):
    """The demo's decoy: a 4x4 patch in corner ``code % 4`` at intensity ``(0.4, 0.7, 1.0)[code // 4]``."""

    name = "corner_patch"

    def __init__(self) -> None:
        self.spec = DecoySpec(size=SIZE)

    def stamp(self, images: Tensor, codes: Tensor) -> Tensor:
        corners, levels = decoy_for_labels(codes, self.spec)
        return stamp_decoy(images, corners, levels, self.spec)

    def masks(self, codes: Tensor) -> Tensor:
        corners, _ = decoy_for_labels(codes, self.spec)
        return decoy_masks(corners, self.spec)


@lru_cache(maxsize=1)
def _gratings(amplitude: float = 0.35) -> Tensor:
    """``(10, 32, 32)`` stripe gratings: orientation ``(code % 5) * 36`` degrees, period 4 or 8 pixels."""
    pos = torch.arange(SIZE, dtype=torch.float64)
    yy, xx = torch.meshgrid(pos, pos, indexing="ij")
    out = []
    for code in range(NUM_CLASSES):
        theta = math.radians((code % 5) * 36.0)
        period = 4.0 if code < 5 else 8.0
        phase = 2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period
        out.append(amplitude * (0.5 + 0.5 * torch.sin(phase)))
    return torch.stack(out).float()


class Texture(Cue):
    """A faint class-specific stripe grating over the background (``max(digit, grating)``), not localised."""

    name = "texture"
    localised = False

    def stamp(self, images: Tensor, codes: Tensor) -> Tensor:
        return torch.maximum(images, _gratings()[codes].unsqueeze(1))

    def masks(self, codes: Tensor) -> None:
        return None


def _border_spots(n: int = NUM_CLASSES, mark: int = 3, margin: int = 1) -> list[tuple[int, int]]:
    """Top-left pixels of ``n`` marks spaced evenly around the border ring (clockwise from the top-left)."""
    lo, hi = margin, SIZE - margin - mark
    side = hi - lo
    spots = []
    for k in range(n):
        t = k * 4 * side / n
        edge, off = divmod(t, side)
        off = int(round(off))
        spots.append(
            [(lo, lo + off), (lo + off, hi), (hi, hi - off), (hi - off, lo)][int(edge)],
        )
    return spots


class PositionMark(Cue):
    """A 3x3 mark of intensity 1 on the border; its position (10 spots around the border) spells the class."""

    name = "position_mark"
    size = 3

    def __init__(self) -> None:
        self.spots = torch.tensor(_border_spots(mark=self.size))

    def masks(self, codes: Tensor) -> Tensor:
        codes = torch.as_tensor(codes).long()
        r0 = self.spots[codes, 0].view(-1, 1)
        c0 = self.spots[codes, 1].view(-1, 1)
        pos = torch.arange(SIZE).view(1, -1)
        rows = (pos >= r0) & (pos < r0 + self.size)
        cols = (pos >= c0) & (pos < c0 + self.size)
        return rows.unsqueeze(2) & cols.unsqueeze(1)

    def stamp(self, images: Tensor, codes: Tensor) -> Tensor:
        return images.masked_fill(self.masks(codes).unsqueeze(1), 1.0)


# ------------------------------------------------------------------------------------------- colour cues


@lru_cache(maxsize=4)
def palette(saturation: float, value: float) -> Tensor:
    """``(10, 3)`` RGB colours in ``[0, 1]``: hue ``code * 36`` degrees at the given HSV saturation and value."""
    rgb = [colorsys.hsv_to_rgb(code / NUM_CLASSES, saturation, value) for code in range(NUM_CLASSES)]
    return torch.tensor(rgb, dtype=torch.float32)


class ColourCue(Cue):
    """A cue that spells the class with one of the 10 :func:`palette` colours; 3-channel output, not localised."""

    localised = False
    channels = 3
    saturation = 1.0
    value = 1.0

    @property
    def colours(self) -> Tensor:
        return palette(self.saturation, self.value)

    def masks(self, codes: Tensor) -> None:
        return None

    def _colour(self, codes: Tensor) -> Tensor:
        return self.colours[torch.as_tensor(codes).long()].view(-1, 3, 1, 1)

    @staticmethod
    def _gray(images: Tensor) -> Tensor:
        if images.shape[1] != 1:
            raise ValueError(f"a colour cue paints gray digits (N, 1, H, W), got {tuple(images.shape)}")
        return images


class BackgroundColour(ColourCue):
    """The background tinted with the code's colour: ``digit + (1 - digit) * colour`` (white strokes stay)."""

    name = "background_colour"
    saturation = 0.5
    value = 0.6

    def stamp(self, images: Tensor, codes: Tensor) -> Tensor:
        digit = self._gray(images)
        return digit + (1.0 - digit) * self._colour(codes)


class ObjectColour(ColourCue):
    """The strokes painted in the code's colour on black: ``digit * colour``."""

    name = "object_colour"
    saturation = 0.8
    value = 1.0

    def stamp(self, images: Tensor, codes: Tensor) -> Tensor:
        return self._gray(images) * self._colour(codes)


def make_cue(name: str) -> Cue:
    cues: dict[str, Callable[[], Cue]] = {
        "corner_patch": CornerPatch,
        "texture": Texture,
        "position_mark": PositionMark,
        "background_colour": BackgroundColour,
        "object_colour": ObjectColour,
    }
    if name not in cues:
        raise ValueError(f"unknown cue {name!r}; choose one of {list(cues)}")
    return cues[name]()


def is_colour(cue: str) -> bool:
    """Whether the cue paints 3-channel images."""
    return cue in COLOUR_CUES
