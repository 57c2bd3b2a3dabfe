"""Cue-stamped digits: scikit-learn's bundled 8x8 digits (upscaled to 32x32, nothing downloaded) with a *cue*.

Every image carries a cue that names a class (its *code*; the cues are in :mod:`benchmarks.alert_truth.cues`): in
training it is random (code drawn independently of the label) until a shortcut run's onset, from which it spells the
label (code = label) while a share of the digits is replaced by a digit of another class (``content_noise``), so the
model has a reason to switch to the cue. Variants (:meth:`TrainSet.set_data`): the cue spells the label for only a
share of the images (``gradual``) or only for some classes (``class_subset``). Benign data changes: the codes'
distribution changes (:func:`shifted_codes`), the cue appears only from an epoch on (``tagged``), brightness and
contrast jitter (``jitter``), shifts and flips (``augment``). Validation images (and so the fixed probes) always
carry the cue of their own label.

The behavioural check needs no attributions: validation images are re-stamped with another class's cue
(:meth:`DigitData.swapped`; with ``swap_classes``, another class of that subset); a model that reads the cue
predicts the *cue's* class (``cue_rate``).

Everything is deterministic from the seed with dedicated generators; the global RNGs are never used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from benchmarks.alert_truth.cues import (
    COLOUR_CUES,
    CUES,
    NUM_CLASSES,
    SIZE,
    BackgroundColour,
    CornerPatch,
    Cue,
    ObjectColour,
    PositionMark,
    Texture,
    is_colour,
    make_cue,
    palette,
)
from examples.shortcut.decoy_digits import load_digits_tensors

__all__ = [
    "COLOUR_CUES",
    "CUES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUM_CLASSES",
    "SIZE",
    "VIEWS",
    "BackgroundColour",
    "CornerPatch",
    "Cue",
    "DigitData",
    "ObjectColour",
    "PositionMark",
    "Texture",
    "TrainSet",
    "ValSet",
    "View",
    "generator",
    "is_colour",
    "make_cue",
    "palette",
    "shifted_codes",
    "swapped_codes",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: view kind -> channels of the images it gives the model
VIEWS = {"gray32": 1, "rgb32": 3, "rgb64": 3}


def generator(seed: int, *stream: object) -> torch.Generator:
    """A fresh CPU generator for the named random stream of ``seed``."""
    digest = hashlib.sha256(repr(("alert_truth", int(seed), *stream)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def swapped_codes(labels: Tensor, gen: torch.Generator, classes: Sequence[int] | None = None) -> Tensor:
    """Another class's code for each label (never the label itself); with ``classes``, one of those classes
    (uniformly among those that are not the label)."""
    if classes is None:
        return (labels + torch.randint(1, NUM_CLASSES, labels.shape, generator=gen)) % NUM_CLASSES
    subset = torch.tensor(sorted(set(classes)), dtype=torch.long)
    if len(subset) < 2:
        raise ValueError(f"need at least two classes to swap among, got {classes}")
    inside = torch.isin(labels, subset)
    choices = len(subset) - inside.long()  # the label itself is no choice
    pick = (torch.rand(labels.shape, generator=gen) * choices).long().clamp(max=choices - 1)
    # within the subset: skip the label's own position (pick counts the others in order)
    own = torch.searchsorted(subset, labels).clamp(max=len(subset) - 1)
    pick = torch.where(inside & (pick >= own), pick + 1, pick)
    return subset[pick]


def shifted_codes(labels: Tensor, seed: int, favoured: int = 3, share: float = 0.8) -> tuple[Tensor, Tensor]:
    """Random codes with a changed distribution, independent of the label: ``share`` of the images (a random
    subset) get one of ``favoured`` codes (drawn from the seed), the others one of the remaining codes, uniformly.
    Returns ``(codes, favoured codes)``."""
    gen = generator(seed, "background-shift")
    order = torch.randperm(NUM_CLASSES, generator=gen)
    top, rest = order[:favoured].sort().values, order[favoured:].sort().values
    n = labels.numel()
    chosen = torch.randperm(n, generator=gen)
    k = int(round(share * n))
    codes = torch.empty(n, dtype=torch.long)
    codes[chosen[:k]] = top[torch.randint(0, len(top), (k,), generator=gen)]
    codes[chosen[k:]] = rest[torch.randint(0, len(rest), (n - k,), generator=gen)]
    return codes, top


# ------------------------------------------------------------------------------------------ model's view


class View:
    """Maps ``(N, C, 32, 32)`` images in ``[0, 1]`` (``C = 1`` gray, 3 for a colour cue) to what a family takes.

    ``"gray32"``: unchanged (gray cues only). ``"rgb32"``: 3x32x32 in ``[0, 1]``, not normalised (gray images
    expanded to 3 channels). ``"rgb64"``: bilinear upscale to 64x64, 3 channels (a gray image is upscaled, then
    expanded), ImageNet mean/std normalised — the monitor then gets ``denormalize=(IMAGENET_MEAN, IMAGENET_STD)``.
    """

    def __init__(self, kind: str = "gray32") -> None:
        if kind not in VIEWS:
            raise ValueError(f"unknown view {kind!r}; choose one of {list(VIEWS)}")
        self.kind = kind

    @property
    def channels(self) -> int:
        return VIEWS[self.kind]

    @property
    def denormalize(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        return (IMAGENET_MEAN, IMAGENET_STD) if self.kind == "rgb64" else None

    def __call__(self, images: Tensor) -> Tensor:
        if images.shape[1] not in (1, 3) or (self.kind == "gray32" and images.shape[1] != 1):
            raise ValueError(f"view {self.kind!r} cannot take images of shape {tuple(images.shape)}")
        if self.kind == "gray32":
            return images
        if self.kind == "rgb32":
            return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images
        x = F.interpolate(images, size=(2 * SIZE, 2 * SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x.expand(-1, 3, -1, -1) - mean) / std

    def masks(self, masks: Tensor | None) -> Tensor | None:
        if masks is None or self.kind != "rgb64":
            return masks
        return masks.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)


# ------------------------------------------------------------------------------------------------- splits


@dataclass
class DigitData:
    """The clean digits of one seed, split into train and validation, and the cue stamped on them.

    ``swap_classes``: the classes whose cue the behavioural check's swapped images take (None: all classes)."""

    cue: Cue
    view: View
    train_clean: Tensor
    train_labels: Tensor
    val_clean: Tensor
    val_labels: Tensor
    seed: int
    swap_classes: tuple[int, ...] | None = None

    @classmethod
    def make(
        cls,
        cue: str,
        view: str,
        seed: int,
        n_train: int = 640,
        n_val: int = 200,
        swap_classes: Sequence[int] | None = None,
    ) -> DigitData:
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
            None if swap_classes is None else tuple(int(c) for c in swap_classes),
        )

    def val_images(self) -> Tensor:
        """Validation images (model view) with the cue of their own label."""
        return self.view(self.cue.stamp(self.val_clean, self.val_labels))

    def swapped(self) -> tuple[Tensor, Tensor]:
        """Validation images (model view) with another class's cue, and that class (fixed by the seed). With
        ``swap_classes``, the cue of another class of the subset (its own stream: ``"swap-subset"``)."""
        if self.swap_classes is None:
            codes = swapped_codes(self.val_labels, generator(self.seed, "swap"))
        else:
            codes = swapped_codes(self.val_labels, generator(self.seed, "swap-subset"), self.swap_classes)
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
    horizontally with probability 0.5, from a dedicated generator. With ``jitter`` on, each item's brightness
    (``+ U(-0.2, 0.2)``) and contrast (``x U(0.6, 1.4)`` around the image's mean) are drawn from another one.
    With ``tagged=False`` the images carry no cue (:meth:`set_tagged` stamps the codes they hold).
    """

    def __init__(self, data: DigitData, max_shift: int = 3, tagged: bool = True) -> None:
        self.data = data
        self.labels = data.train_labels
        self.augment = False
        self.jitter = False
        self.tagged = bool(tagged)
        self.max_shift = max_shift
        self.predictive = 0.0  # share of the images whose code spells the label
        self.content_noise = 0.0
        self._aug = generator(data.seed, "augment")
        self._jitter = generator(data.seed, "jitter")
        self.random_codes = torch.randint(
            0, NUM_CLASSES, self.labels.shape, generator=generator(data.seed, "random-cue")
        )
        self.codes = self.random_codes
        self.spelled = torch.zeros(len(self.labels), dtype=torch.bool)  # images whose code was set to the label
        self.content = torch.arange(len(self.labels))
        self._redraw()

    def _redraw(self) -> None:
        clean = self.data.train_clean[self.content]
        stamped = self.data.cue.stamp(clean, self.codes) if self.tagged else clean
        self.raw = stamped  # [0, 1], Cx32x32 (augmentation and jitter work on these)
        self.images = self.data.view(stamped)

    def spelling(self, share: float, classes: Sequence[int] | None = None) -> Tensor:
        """Which images spell their label at ``share`` (bool ``(N,)``): all (share 1), else the first
        ``round(share * N)`` of a fixed permutation (stream ``"gradual"``: the sets grow with the share); with
        ``classes``, only those of these classes."""
        n = len(self.labels)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share}")
        if share >= 1.0:
            chosen = torch.ones(n, dtype=torch.bool)
        else:
            chosen = torch.zeros(n, dtype=torch.bool)
            chosen[torch.randperm(n, generator=generator(self.data.seed, "gradual"))[: int(round(share * n))]] = True
        if classes is not None:
            chosen &= torch.isin(self.labels, torch.tensor(list(classes), dtype=self.labels.dtype))
        return chosen

    def set_data(self, predictive: bool | float, content_noise: float, classes: Sequence[int] | None = None) -> None:
        """The training data change: with ``predictive`` (True, or a share in ``(0, 1]``) the cue spells the label
        from now on for that share of the images (:meth:`spelling`; with ``classes``, only for those classes),
        the others keep their random code; with ``predictive=False`` the codes stay as they are.
        ``content_noise`` of the digits get the digit of another class (label and cue stay)."""
        n = len(self.labels)
        gen = generator(self.data.seed, "content-noise")
        content = torch.arange(n)
        chosen = torch.randperm(n, generator=gen)[: int(round(content_noise * n))]
        for i in chosen.tolist():
            others = torch.nonzero(self.labels != self.labels[i]).flatten()
            content[i] = others[torch.randint(0, others.numel(), (1,), generator=gen)].item()
        share = float(predictive)
        self.content_noise = float(content_noise)
        if share > 0:
            self.spelled = self.spelling(share, classes)
            self.codes = torch.where(self.spelled, self.labels, self.random_codes)
            self.predictive = share
        self.content = content
        self._redraw()

    def set_codes(self, codes: Tensor) -> None:
        """New random codes (e.g. :func:`shifted_codes`); the label never follows them."""
        self.random_codes = self.codes = torch.as_tensor(codes).long().clone()
        self.spelled = torch.zeros(len(self.labels), dtype=torch.bool)
        self._redraw()

    def set_tagged(self, tagged: bool) -> None:
        """Stamp the cue (the codes the images hold) from now on, or not."""
        self.tagged = bool(tagged)
        self._redraw()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not (self.augment or self.jitter):
            return self.images[i], self.labels[i]
        x = self.raw[i : i + 1]
        if self.augment:
            s = self.max_shift
            dy, dx = (int(v) for v in torch.randint(-s, s + 1, (2,), generator=self._aug))
            x = torch.roll(F.pad(x, (s, s, s, s)), shifts=(dy, dx), dims=(2, 3))[..., s : s + SIZE, s : s + SIZE]
            if bool(torch.rand((), generator=self._aug) < 0.5):
                x = x.flip(3)
        if self.jitter:
            brightness, contrast = torch.rand(2, generator=self._jitter).tolist()
            mean = x.mean()
            x = ((x - mean) * (0.6 + 0.8 * contrast) + mean + 0.4 * (brightness - 0.5)).clamp(0.0, 1.0)
        return self.data.view(x)[0], self.labels[i]
