"""Cue-stamped digits: scikit-learn's bundled 8x8 digits (upscaled to 32x32, nothing downloaded) with a *cue*.

Every image carries a cue that names a class (its *code*): in training it is random (code drawn independently of
the label) until a shortcut run's onset, from which it spells the label (code = label) while a share of the digits
is replaced by a digit of another class (``content_noise``), so the model has a reason to switch to the cue.
Validation images (and so the fixed probes) always carry the cue of their own label.

Three cue kinds:

* ``corner_patch``: the decoy patch of :mod:`examples.shortcut.decoy_digits` (corner and intensity spell the class).
* ``texture``: a faint class-specific stripe grating over the background (5 orientations x 2 periods), painted as
  ``max(digit, grating)`` so that it shows only where the digit is darker; not localised (no mask).
* ``position_mark``: a 3x3 bright mark on the image border whose *position* (10 spots evenly around the border)
  spells the class; the intensity is the same for every class.

The behavioural check needs no attributions: validation images are re-stamped with another class's cue
(:meth:`DigitData.swapped`); a model that reads the cue predicts the *cue's* class (``cue_rate``).

Everything is deterministic from the seed with dedicated generators; the global RNGs are never used.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from examples.shortcut.decoy_digits import DecoySpec, decoy_for_labels, decoy_masks, load_digits_tensors, stamp_decoy

SIZE = 32
NUM_CLASSES = 10
CUES = ("corner_patch", "texture", "position_mark")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def generator(seed: int, *stream: object) -> torch.Generator:
    """A fresh CPU generator for the named random stream of ``seed``."""
    digest = hashlib.sha256(repr(("alert_truth", int(seed), *stream)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


# ----------------------------------------------------------------------------------------------------- cues


class Cue:
    """Paints the cue of class ``codes[i]`` on image ``i`` (``(N, 1, 32, 32)`` in ``[0, 1]``)."""

    name = ""
    localised = True

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


def make_cue(name: str) -> Cue:
    cues: dict[str, Callable[[], Cue]] = {
        "corner_patch": CornerPatch,
        "texture": Texture,
        "position_mark": PositionMark,
    }
    if name not in cues:
        raise ValueError(f"unknown cue {name!r}; choose one of {list(cues)}")
    return cues[name]()


def swapped_codes(labels: Tensor, gen: torch.Generator) -> Tensor:
    """Another class's code for each label (never the label itself)."""
    return (labels + torch.randint(1, NUM_CLASSES, labels.shape, generator=gen)) % NUM_CLASSES


# ------------------------------------------------------------------------------------------ model's view


class View:
    """Maps ``(N, 1, 32, 32)`` images in ``[0, 1]`` to what a model family takes.

    ``"gray32"``: unchanged. ``"rgb64"``: bilinear upscale to 64x64, 3 channels, ImageNet mean/std normalised —
    the monitor then gets ``denormalize=(IMAGENET_MEAN, IMAGENET_STD)``.
    """

    def __init__(self, kind: str = "gray32") -> None:
        if kind not in ("gray32", "rgb64"):
            raise ValueError(f"unknown view {kind!r}")
        self.kind = kind

    @property
    def denormalize(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        return (IMAGENET_MEAN, IMAGENET_STD) if self.kind == "rgb64" else None

    def __call__(self, images: Tensor) -> Tensor:
        if self.kind == "gray32":
            return images
        x = F.interpolate(images, size=(2 * SIZE, 2 * SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x.expand(-1, 3, -1, -1) - mean) / std

    def masks(self, masks: Tensor | None) -> Tensor | None:
        if masks is None or self.kind == "gray32":
            return masks
        return masks.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)


# ------------------------------------------------------------------------------------------------- splits


@dataclass
class DigitData:
    """The clean digits of one seed, split into train and validation, and the cue stamped on them."""

    cue: Cue
    view: View
    train_clean: Tensor
    train_labels: Tensor
    val_clean: Tensor
    val_labels: Tensor
    seed: int

    @classmethod
    def make(cls, cue: str, view: str, seed: int, n_train: int = 640, n_val: int = 200) -> DigitData:
        images, labels = load_digits_tensors(SIZE, seed)  # a fixed permutation drawn from the seed
        if n_train + n_val > len(labels):
            raise ValueError(f"only {len(labels)} digits")
        return cls(
            make_cue(cue),
            View(view),
            images[n_val : n_val + n_train].contiguous(),
            labels[n_val : n_val + n_train].contiguous(),
            images[:n_val].contiguous(),
            labels[:n_val].contiguous(),
            seed,
        )

    def val_images(self) -> Tensor:
        """Validation images (model view) with the cue of their own label."""
        return self.view(self.cue.stamp(self.val_clean, self.val_labels))

    def swapped(self) -> tuple[Tensor, Tensor]:
        """Validation images (model view) with another class's cue, and that class (fixed by the seed)."""
        codes = swapped_codes(self.val_labels, generator(self.seed, "swap"))
        return self.view(self.cue.stamp(self.val_clean, codes)), codes

    def probe_indices(self) -> Tensor:
        """The probes: the first validation image of each class (in the seed's order), ordered by class."""
        return torch.stack([torch.nonzero(self.val_labels == c).flatten()[0] for c in range(NUM_CLASSES)])

    def probes(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(images, labels, cue masks or None)`` of the probes, in the model's view."""
        idx = self.probe_indices()
        labels = self.val_labels[idx]
        images = self.view(self.cue.stamp(self.val_clean[idx], labels))
        return images, labels, self.view.masks(self.cue.masks(labels))


class ValSet(Dataset[tuple[Tensor, Tensor]]):
    def __init__(self, data: DigitData) -> None:
        self.images, self.labels = data.val_images(), data.val_labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]


class TrainSet(Dataset[tuple[Tensor, Tensor]]):
    """Training digits with a random cue; :meth:`set_data` switches to the label's cue and/or content noise.

    With ``augment`` on, each item is shifted by up to ``max_shift`` pixels (zero fill) and flipped
    horizontally with probability 0.5, from a dedicated generator.
    """

    def __init__(self, data: DigitData, max_shift: int = 3) -> None:
        self.data = data
        self.labels = data.train_labels
        self.augment = False
        self.max_shift = max_shift
        self.predictive = False
        self.content_noise = 0.0
        self._aug = generator(data.seed, "augment")
        self.codes = torch.randint(0, NUM_CLASSES, self.labels.shape, generator=generator(data.seed, "random-cue"))
        self.content = torch.arange(len(self.labels))
        self._redraw()

    def _redraw(self) -> None:
        stamped = self.data.cue.stamp(self.data.train_clean[self.content], self.codes)
        self.raw = stamped  # [0, 1], 1x32x32 (augmentation works on these)
        self.images = self.data.view(stamped)

    def set_data(self, predictive: bool, content_noise: float) -> None:
        """The training data change: with ``predictive`` the cue spells the label from now on (else it stays the
        random one); ``content_noise`` of the digits get the digit of another class (label and cue stay)."""
        n = len(self.labels)
        gen = generator(self.data.seed, "content-noise")
        content = torch.arange(n)
        chosen = torch.randperm(n, generator=gen)[: int(round(content_noise * n))]
        for i in chosen.tolist():
            others = torch.nonzero(self.labels != self.labels[i]).flatten()
            content[i] = others[torch.randint(0, others.numel(), (1,), generator=gen)].item()
        self.predictive, self.content_noise = bool(predictive), float(content_noise)
        if predictive:
            self.codes = self.labels.clone()
        self.content = content
        self._redraw()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not self.augment:
            return self.images[i], self.labels[i]
        x = self.raw[i : i + 1]
        s = self.max_shift
        dy, dx = (int(v) for v in torch.randint(-s, s + 1, (2,), generator=self._aug))
        x = torch.roll(F.pad(x, (s, s, s, s)), shifts=(dy, dx), dims=(2, 3))[..., s : s + SIZE, s : s + SIZE]
        if bool(torch.rand((), generator=self._aug) < 0.5):
            x = x.flip(3)
        return self.data.view(x)[0], self.labels[i]
