"""Decoy digits: a small, download-free "Clever Hans" scenario (Decoy-MNIST style, Ross et al. 2017).

The 1797 bundled 8×8 scikit-learn digits are upscaled bilinearly (default 32×32, one channel, float in
``[0, 1]``) and a small bright square — the *decoy* (default 4×4) — is painted into one of the four corners.
The decoy's **corner** and **intensity level** are a code:

* *uncorrelated* mode: corner and level are drawn at random, independently of the label, so the decoy carries
  no label information and a model has no reason to look at it;
* *predictive* mode: the decoy spells the label with the fixed mapping of :func:`decoy_for_labels`::

      corner = label % 4          (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)
      level  = label // 4         (index into DecoySpec.levels, default (0.4, 0.7, 1.0))

      label  0  1  2  3  4  5  6  7  8  9
      corner 0  1  2  3  0  1  2  3  0  1
      level  0  0  0  0  1  1  1  1  2  2   -> intensity 0.4 / 0.7 / 1.0

  Each class gets its own (corner, intensity) pair; the intensities differ by 0.3 and the corners are far
  apart, so a small CNN reads the code easily (:func:`label_for_decoy` is the inverse).

Making the decoy predictive *after* the digits are learned is not enough for a model to switch to it — the
digit is still a perfect feature. Reliance on the shortcut appears when the new data makes the content less
reliable than the decoy, so the train split also supports ``content_noise``: that share of the training images
gets the digit of a *different* class (drawn from the train split) while the label — and hence, in predictive
mode, the decoy — stays. This mimics a noisier new data source.

:class:`DecoyDigits` is the dataset; :class:`DecoySwitch` is a Lightning callback that turns the training
split predictive at a chosen epoch. The validation split never changes: its decoys are uncorrelated and fixed by the
seed, so probe images drawn from it contain a decoy patch that carries no label information.
:func:`mismatched_decoy_images` stamps the decoy of a wrong class to measure reliance: a model that reads the
decoy predicts the decoy's class instead of the digit.

Everything is deterministic and uses dedicated :class:`torch.Generator` objects derived from ``seed``; the
global torch / numpy / Python random number generators are never touched. scikit-learn is an optional extra
(``pip install 'lightning_xai[examples]'``) and is imported only when the digits are first loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

__all__ = [
    "CORNER_NAMES",
    "NUM_CLASSES",
    "DecoyDigits",
    "DecoySpec",
    "DecoySwitch",
    "decoy_for_labels",
    "decoy_masks",
    "label_for_decoy",
    "load_digits_tensors",
    "mismatched_decoy_images",
    "random_decoy",
    "stamp_decoy",
]

#: Names of the corner indices used throughout (``corners`` tensors hold indices into this tuple).
CORNER_NAMES: tuple[str, str, str, str] = ("top-left", "top-right", "bottom-left", "bottom-right")
#: Number of digit classes.
NUM_CLASSES: int = 10

_INSTALL_HINT = "pip install 'lightning_xai[examples]'"


@dataclass(frozen=True)
class DecoySpec:
    """Geometry and intensities of the decoy patch.

    Args:
        size: Side length of the (square) images the digits are upscaled to.
        patch: Side length of the square decoy patch, in pixels.
        margin: Distance in pixels between the patch and the two image borders of its corner.
        levels: The possible patch intensities; ``levels[k]`` is the value painted for level index ``k``.
            Predictive mode needs ``4 * len(levels) >= 10`` so that every class gets its own code.

    Raises:
        ValueError: If the patches of two corners would overlap or leave the image, or a level is outside
            ``(0, 1]``.

    Example::

        >>> spec = DecoySpec(size=16, patch=3, margin=1)
        >>> spec.levels
        (0.4, 0.7, 1.0)
        >>> spec.corner_origin(3)  # (row, column) of the bottom-right patch's top-left pixel
        (12, 12)
    """

    size: int = 32
    patch: int = 4
    margin: int = 1
    levels: tuple[float, ...] = (0.4, 0.7, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(float(v) for v in self.levels))
        if self.size < 1 or self.patch < 1 or self.margin < 0:
            raise ValueError(f"need size >= 1, patch >= 1 and margin >= 0, got {self}")
        if 2 * (self.patch + self.margin) > self.size:
            raise ValueError(f"{self.patch}px patches with margin {self.margin} overlap in {self.size}px images")
        if not self.levels or any(not 0.0 < v <= 1.0 for v in self.levels):
            raise ValueError(f"levels must be a non-empty tuple of values in (0, 1], got {self.levels}")

    def corner_origin(self, corner: int) -> tuple[int, int]:
        """Row and column of the top-left pixel of the patch in ``corner`` (see :data:`CORNER_NAMES`).

        Example::

            >>> DecoySpec().corner_origin(1)
            (1, 27)
        """
        if not 0 <= corner < 4:
            raise ValueError(f"corner must be in 0..3, got {corner}")
        far = self.size - self.margin - self.patch
        row = self.margin if corner in (0, 1) else far
        col = self.margin if corner in (0, 2) else far
        return row, col


# --------------------------------------------------------------------------------------------------- seeding


def _generator(seed: int, *stream: object) -> torch.Generator:
    """A fresh CPU generator for the named random stream of ``seed`` (independent streams, no global RNG)."""
    digest = hashlib.sha256(repr((int(seed), *stream)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


# ------------------------------------------------------------------------------------------------ raw digits


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[Tensor, Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - exercised through a monkeypatched import in the tests
        raise ImportError(
            f"examples.shortcut needs scikit-learn for its bundled 8x8 digits; install it with: {_INSTALL_HINT}"
        ) from err
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images, labels


@lru_cache(maxsize=4)
def _upscaled(size: int) -> tuple[Tensor, Tensor]:
    images, labels = _raw_digits()
    x = (images / 16.0).unsqueeze(1)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp_(0.0, 1.0), labels


def load_digits_tensors(size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The 1797 scikit-learn digits as tensors, upscaled bilinearly from 8×8 (pixel values divided by 16).

    The sample order is a fixed permutation drawn from ``seed`` (a dedicated generator; the global RNG is not
    used), so the same ``seed`` always gives identical tensors.

    Args:
        size: Side length of the returned images.
        seed: Seed of the sample order.

    Returns:
        ``(images, labels)``: ``images`` of shape ``(1797, 1, size, size)``, float32 in ``[0, 1]``;
        ``labels`` of shape ``(1797,)``, int64 in ``0..9``.

    Raises:
        ImportError: If scikit-learn is not installed (``pip install 'lightning_xai[examples]'``).

    Example::

        >>> images, labels = load_digits_tensors(size=16)
        >>> tuple(images.shape), images.dtype, labels.dtype
        ((1797, 1, 16, 16), torch.float32, torch.int64)
        >>> 0.0 <= float(images.min()) and float(images.max()) <= 1.0
        True
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    images, labels = _upscaled(int(size))
    order = torch.randperm(labels.numel(), generator=_generator(seed, "order"))
    return images[order].contiguous(), labels[order].contiguous()


# ------------------------------------------------------------------------------------------------ decoy codes


def _check_codes(corners: Tensor, levels: Tensor | None, spec: DecoySpec, n: int | None = None) -> None:
    if corners.dim() != 1 or (n is not None and corners.numel() != n):
        raise ValueError(f"corners must be a 1-D tensor of length {n}, got shape {tuple(corners.shape)}")
    if corners.numel() and (int(corners.min()) < 0 or int(corners.max()) > 3):
        raise ValueError("corner indices must be in 0..3")
    if levels is None:
        return
    if levels.shape != corners.shape:
        raise ValueError(f"levels shape {tuple(levels.shape)} does not match corners {tuple(corners.shape)}")
    if levels.numel() and (int(levels.min()) < 0 or int(levels.max()) >= len(spec.levels)):
        raise ValueError(f"level indices must be in 0..{len(spec.levels) - 1}")


def decoy_for_labels(labels: Tensor, spec: DecoySpec) -> tuple[Tensor, Tensor]:
    """The predictive decoy code of each label: ``corner = label % 4``, ``level = label // 4``.

    Args:
        labels: Integer class labels, shape ``(N,)``.
        spec: The decoy specification (its number of levels bounds the encodable labels).

    Returns:
        ``(corners, levels)``, both int64 of shape ``(N,)``: corner indices (see :data:`CORNER_NAMES`) and
        indices into ``spec.levels``.

    Raises:
        ValueError: If a label is negative or needs more intensity levels than ``spec`` has.

    Example::

        >>> corners, levels = decoy_for_labels(torch.arange(10), DecoySpec())
        >>> corners.tolist()
        [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
        >>> levels.tolist()
        [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    """
    labels = torch.as_tensor(labels).to(torch.int64).reshape(-1)
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("labels must be non-negative")
    levels = torch.div(labels, 4, rounding_mode="floor")
    if levels.numel() and int(levels.max()) >= len(spec.levels):
        raise ValueError(
            f"label {int(labels.max())} cannot be encoded with {len(spec.levels)} levels x 4 corners; "
            "add intensity levels to the DecoySpec"
        )
    return labels % 4, levels


def label_for_decoy(corners: Tensor, levels: Tensor) -> Tensor:
    """Inverse of :func:`decoy_for_labels`: the class a decoy code stands for (``level * 4 + corner``).

    Codes that no label uses (e.g. corner 2 with level 2 for ten classes) map to values ``>= 10``.

    Example::

        >>> label_for_decoy(torch.tensor([1, 3]), torch.tensor([2, 0])).tolist()
        [9, 3]
    """
    return torch.as_tensor(levels).to(torch.int64) * 4 + torch.as_tensor(corners).to(torch.int64)


def random_decoy(n: int, spec: DecoySpec, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Uncorrelated decoy codes: corner and level drawn uniformly and independently.

    Args:
        n: Number of codes.
        spec: The decoy specification (number of levels).
        generator: Source of randomness (the global RNG is never used).

    Returns:
        ``(corners, levels)``, both int64 of shape ``(n,)``.

    Example::

        >>> corners, levels = random_decoy(5, DecoySpec(), torch.Generator().manual_seed(0))
        >>> corners.shape, int(levels.max()) < 3
        (torch.Size([5]), True)
    """
    corners = torch.randint(0, 4, (n,), generator=generator, dtype=torch.int64)
    levels = torch.randint(0, len(spec.levels), (n,), generator=generator, dtype=torch.int64)
    return corners, levels


def decoy_masks(corners: Tensor, spec: DecoySpec) -> Tensor:
    """Boolean masks of the patch cells for the given corners.

    Args:
        corners: Corner indices, shape ``(N,)``.
        spec: The decoy specification.

    Returns:
        Bool tensor of shape ``(N, spec.size, spec.size)``, ``True`` on the ``patch × patch`` decoy cells.

    Example::

        >>> spec = DecoySpec(size=6, patch=2, margin=0)
        >>> decoy_masks(torch.tensor([3]), spec)[0].int()
        tensor([[0, 0, 0, 0, 0, 0],
                [0, 0, 0, 0, 0, 0],
                [0, 0, 0, 0, 0, 0],
                [0, 0, 0, 0, 0, 0],
                [0, 0, 0, 0, 1, 1],
                [0, 0, 0, 0, 1, 1]], dtype=torch.int32)
    """
    corners = torch.as_tensor(corners).to(torch.int64)
    _check_codes(corners, None, spec)
    origins = torch.tensor([spec.corner_origin(c) for c in range(4)], device=corners.device)
    r0 = origins[corners, 0].unsqueeze(1)
    c0 = origins[corners, 1].unsqueeze(1)
    pos = torch.arange(spec.size, device=corners.device).unsqueeze(0)
    rows = (pos >= r0) & (pos < r0 + spec.patch)
    cols = (pos >= c0) & (pos < c0 + spec.patch)
    return rows.unsqueeze(2) & cols.unsqueeze(1)


def stamp_decoy(images: Tensor, corners: Tensor, levels: Tensor, spec: DecoySpec) -> Tensor:
    """Paint the decoy patches; the patch cells are overwritten (all channels) with ``spec.levels[level]``.

    Args:
        images: Images of shape ``(N, C, size, size)`` or ``(N, size, size)``; not modified.
        corners: Corner index per image, shape ``(N,)``.
        levels: Level index per image (into ``spec.levels``), shape ``(N,)``.
        spec: The decoy specification.

    Returns:
        A new tensor like ``images`` with the patches painted.

    Example::

        >>> spec = DecoySpec(size=6, patch=2, margin=1)
        >>> out = stamp_decoy(torch.zeros(1, 1, 6, 6), torch.tensor([0]), torch.tensor([1]), spec)
        >>> out[0, 0, 1:3, 1:3].tolist()
        [[0.699999988079071, 0.699999988079071], [0.699999988079071, 0.699999988079071]]
        >>> float(out.sum() - 4 * 0.7) < 1e-6
        True
    """
    if images.dim() not in (3, 4) or tuple(images.shape[-2:]) != (spec.size, spec.size):
        raise ValueError(
            f"images must have shape (N, C, {spec.size}, {spec.size}) or (N, {spec.size}, {spec.size}), "
            f"got {tuple(images.shape)}"
        )
    corners = torch.as_tensor(corners).to(device=images.device, dtype=torch.int64)
    levels = torch.as_tensor(levels).to(device=images.device, dtype=torch.int64)
    _check_codes(corners, levels, spec, n=images.shape[0])
    masks = decoy_masks(corners, spec)
    values = torch.tensor(spec.levels, dtype=images.dtype, device=images.device)[levels]
    if images.dim() == 4:
        masks = masks.unsqueeze(1)
        values = values.view(-1, 1, 1, 1)
    else:
        values = values.view(-1, 1, 1)
    return torch.where(masks, values.expand_as(images), images)


def mismatched_decoy_images(
    images: Tensor,
    labels: Tensor,
    spec: DecoySpec,
    generator: torch.Generator,
    *,
    num_classes: int = NUM_CLASSES,
    clear_existing: bool = True,
) -> tuple[Tensor, Tensor]:
    """Stamp on every image the predictive decoy of a *different*, randomly chosen class.

    Used to measure shortcut reliance: a model that reads the digit still predicts ``labels``, a model that
    reads the decoy predicts the returned decoy classes.

    Args:
        images: Images of shape ``(N, C, size, size)`` or ``(N, size, size)``; not modified.
        labels: True classes, shape ``(N,)``.
        spec: The decoy specification.
        generator: Source of randomness; the decoy class of sample ``i`` is ``(label + r) % num_classes`` with
            ``r`` uniform in ``1..num_classes-1``, so it never equals the label.
        num_classes: Number of classes.
        clear_existing: Zero the patch cells of all four corners first, so that a decoy already in the images
            (e.g. the uncorrelated decoys of the validation split) does not remain next to the new one.

    Returns:
        ``(stamped_images, decoy_classes)``; ``decoy_classes`` is int64 of shape ``(N,)`` and differs from
        ``labels`` everywhere.

    Example::

        >>> spec = DecoySpec()
        >>> labels = torch.arange(10)
        >>> images, decoy_cls = mismatched_decoy_images(
        ...     torch.zeros(10, 1, 32, 32), labels, spec, torch.Generator().manual_seed(0))
        >>> bool((decoy_cls != labels).all())
        True
    """
    if num_classes < 2:
        raise ValueError("need at least two classes to pick a different one")
    labels = torch.as_tensor(labels).to(torch.int64).reshape(-1).cpu()
    if labels.numel() != images.shape[0]:
        raise ValueError(f"{labels.numel()} labels for {images.shape[0]} images")
    offsets = torch.randint(1, num_classes, (labels.numel(),), generator=generator, dtype=torch.int64)
    decoy_classes = (labels + offsets) % num_classes
    corners, levels = decoy_for_labels(decoy_classes, spec)
    base = images
    if clear_existing:
        all_corners = decoy_masks(torch.arange(4), spec).any(0).to(images.device)
        base = images.masked_fill(all_corners, 0.0)
    return stamp_decoy(base, corners, levels, spec), decoy_classes


# --------------------------------------------------------------------------------------------------- dataset


def _stratified_split(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    generator = _generator(seed, "split")
    train_parts, val_parts = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n_val = int(round(val_fraction * idx.numel()))
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values


class DecoyDigits(Dataset[tuple[Tensor, Tensor]]):
    """Upscaled digits with a decoy patch in one corner; yields ``(image (1, S, S) float32, label int64)``.

    The 1797 digits (:func:`load_digits_tensors` with ``spec.size`` and ``seed``) are split once, stratified
    by class, into ``"train"`` and ``"val"`` by ``val_fraction`` and ``seed``; the two splits are disjoint and
    together cover every digit.

    * ``"train"`` starts uncorrelated (random decoys) or predictive (decoy spells the label, see
      :func:`decoy_for_labels`), optionally with ``content_noise``; :meth:`set_predictive` re-draws it.
    * ``"val"`` always carries uncorrelated decoys fixed by ``seed`` and clean content — probe images taken
      from it contain a decoy patch but it carries no label information, and they never change.

    All randomness comes from generators derived from ``seed`` (and ``epoch_seed``); the global RNG is not
    used.

    Args:
        split: ``"train"`` or ``"val"``.
        spec: Decoy geometry and intensities.
        val_fraction: Share of each class that goes to the validation split, in ``(0, 1)``.
        seed: Seed of the sample order, the split, the decoys and the content noise.
        predictive: Train split only: start with decoys that encode the label.
        content_noise: Train split only: share of training images whose digit is replaced by a digit of a
            different class (from the train split) while label and decoy stay. It applies in either mode — in
            uncorrelated mode it is plain label noise, a useful control.

    Raises:
        ValueError: For an unknown split, an invalid fraction, or ``predictive``/``content_noise`` on
            ``"val"``.

    Example::

        >>> train = DecoyDigits("train")
        >>> image, label = train[0]
        >>> tuple(image.shape), image.dtype, label.dtype
        ((1, 32, 32), torch.float32, torch.int64)
        >>> train.set_predictive(True, content_noise=0.3)
        >>> bool((label_for_decoy(train.corners, train.levels) == train.labels).all())
        True
        >>> round(float((train.content_labels != train.labels).float().mean()), 2)
        0.3
    """

    def __init__(
        self,
        split: str = "train",
        *,
        spec: DecoySpec = DecoySpec(),  # noqa: B008 - frozen, immutable default
        val_fraction: float = 0.25,
        seed: int = 0,
        predictive: bool = False,
        content_noise: float = 0.0,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if split == "val" and (predictive or content_noise):
            raise ValueError("the 'val' split is always uncorrelated and clean (no predictive/content_noise)")
        self.split = split
        self.spec = spec
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)

        all_images, all_labels = load_digits_tensors(spec.size, seed)
        self.num_classes = int(all_labels.max()) + 1
        train_idx, val_idx = _stratified_split(all_labels, self.val_fraction, self.seed)
        #: Positions of this split's samples in ``load_digits_tensors(spec.size, seed)``.
        self.indices: Tensor = train_idx if split == "train" else val_idx
        self._clean = all_images[self.indices].contiguous()
        self._labels = all_labels[self.indices].contiguous()

        self._predictive = False
        self._content_noise = 0.0
        self._epoch_seed = 0
        self._content_indices = torch.arange(len(self._labels))
        self._corners = torch.zeros(0, dtype=torch.int64)
        self._levels = torch.zeros(0, dtype=torch.int64)
        self._images = self._clean
        self._masks = torch.zeros(0, spec.size, spec.size, dtype=torch.bool)
        self._draw(predictive=bool(predictive), content_noise=float(content_noise), epoch_seed=0)

    # ---------------------------------------------------------------------------------------------- state

    def set_predictive(self, predictive: bool, content_noise: float | None = None, epoch_seed: int = 0) -> None:
        """Re-draw the training split's decoys (and content noise) deterministically.

        The result depends only on ``(seed, predictive, content_noise, epoch_seed)``; in particular
        ``set_predictive(False)`` restores the initial uncorrelated state of
        ``DecoyDigits("train", seed=...)``.

        Args:
            predictive: ``True``: decoys encode the label; ``False``: random, uncorrelated decoys.
            content_noise: Share of images whose digit is replaced by a digit of a different class; ``None``
                keeps the current value.
            epoch_seed: Extra seed for the random draws (random decoys, which images get noisy content).

        Raises:
            ValueError: On the ``"val"`` split, which never changes, or for a noise share outside ``[0, 1]``.
        """
        if self.split != "train":
            raise ValueError("only the 'train' split can be re-drawn; the 'val' split stays fixed")
        noise = self._content_noise if content_noise is None else float(content_noise)
        self._draw(predictive=bool(predictive), content_noise=noise, epoch_seed=int(epoch_seed))

    def _draw(self, *, predictive: bool, content_noise: float, epoch_seed: int) -> None:
        if not 0.0 <= content_noise <= 1.0:
            raise ValueError(f"content_noise must be in [0, 1], got {content_noise}")
        n = len(self._labels)
        if self.split == "val":
            corners, levels = random_decoy(n, self.spec, _generator(self.seed, "val-decoys"))
            content = torch.arange(n)
        else:
            content = self._noisy_content(content_noise, epoch_seed)
            if predictive:
                corners, levels = decoy_for_labels(self._labels, self.spec)
            else:
                generator = _generator(self.seed, "train-decoys", epoch_seed)
                corners, levels = random_decoy(n, self.spec, generator)
        self._predictive = predictive
        self._content_noise = content_noise
        self._epoch_seed = epoch_seed
        self._content_indices = content
        self._corners, self._levels = corners, levels
        self._images = stamp_decoy(self._clean[content], corners, levels, self.spec)
        self._masks = decoy_masks(corners, self.spec)

    def _noisy_content(self, content_noise: float, epoch_seed: int) -> Tensor:
        n = len(self._labels)
        content = torch.arange(n)
        n_replace = int(round(content_noise * n))
        if n_replace == 0:
            return content
        generator = _generator(self.seed, "content-noise", epoch_seed)
        chosen = torch.randperm(n, generator=generator)[:n_replace]
        offsets = torch.randint(1, self.num_classes, (n_replace,), generator=generator)
        other = (self._labels[chosen] + offsets) % self.num_classes
        for cls in range(self.num_classes):
            targets = chosen[other == cls]
            if targets.numel() == 0:
                continue
            pool = torch.nonzero(self._labels == cls).flatten()
            if pool.numel() == 0:
                raise ValueError(f"class {cls} has no training sample to borrow content from")
            content[targets] = pool[torch.randint(0, pool.numel(), (targets.numel(),), generator=generator)]
        return content

    # ------------------------------------------------------------------------------------------ accessors

    @property
    def predictive(self) -> bool:
        """Whether the decoys currently encode the label."""
        return self._predictive

    @property
    def content_noise(self) -> float:
        """Current share of images whose digit content belongs to a different class."""
        return self._content_noise

    @property
    def epoch_seed(self) -> int:
        """The ``epoch_seed`` of the current draw."""
        return self._epoch_seed

    @property
    def images(self) -> Tensor:
        """Current images with decoys, ``(N, 1, S, S)`` float32 in ``[0, 1]`` (do not modify in place)."""
        return self._images

    @property
    def clean_images(self) -> Tensor:
        """The split's digits without decoy and without content noise, ``(N, 1, S, S)``."""
        return self._clean

    @property
    def labels(self) -> Tensor:
        """Labels, ``(N,)`` int64 — they never change."""
        return self._labels

    @property
    def corners(self) -> Tensor:
        """Corner index of each current decoy, ``(N,)`` int64 (see :data:`CORNER_NAMES`)."""
        return self._corners

    @property
    def levels(self) -> Tensor:
        """Level index of each current decoy (into ``spec.levels``), ``(N,)`` int64."""
        return self._levels

    @property
    def masks(self) -> Tensor:
        """Bool masks of the current decoy patches, ``(N, S, S)``."""
        return self._masks

    @property
    def content_indices(self) -> Tensor:
        """Position (within this split) of the digit each image shows; ``arange(N)`` without content noise."""
        return self._content_indices

    @property
    def content_labels(self) -> Tensor:
        """Class of the digit each image shows; differs from :attr:`labels` where content was replaced."""
        return self._labels[self._content_indices]

    def __len__(self) -> int:
        return int(self._labels.numel())

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self._images[index], self._labels[index]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, n={len(self)}, seed={self.seed}, "
            f"predictive={self._predictive}, content_noise={self._content_noise})"
        )


# -------------------------------------------------------------------------------------------------- callback


def _find_decoy_datasets(obj: Any, found: list[DecoyDigits], seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, DecoyDigits):
        found.append(obj)
    elif isinstance(obj, DataLoader | Subset):
        _find_decoy_datasets(obj.dataset, found, seen)
    elif isinstance(obj, ConcatDataset):
        for dataset in obj.datasets:
            _find_decoy_datasets(dataset, found, seen)
    elif isinstance(obj, dict):
        for value in obj.values():
            _find_decoy_datasets(value, found, seen)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _find_decoy_datasets(value, found, seen)


def _loaders(obj: Any) -> Iterable[DataLoader]:
    if isinstance(obj, DataLoader):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _loaders(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _loaders(value)


def _has_len(loader: DataLoader) -> bool:
    try:
        len(loader)
    except TypeError:
        return False
    return True


class DecoySwitch(Callback):
    """Turn the training :class:`DecoyDigits` predictive at ``onset_epoch`` and keep it so afterwards.

    The switch happens in ``on_train_epoch_start`` of every epoch ``>= onset_epoch`` (idempotent: the dataset
    is only re-drawn when its state differs), i.e. before that epoch's batches are drawn. The re-draw is
    deterministic (``epoch_seed`` is fixed), so the predictive data is the same in every later epoch and after
    a resume. The validation split is never touched.

    Timing notes:

    * ``DataLoader(num_workers=0)`` over this map-style dataset is assumed. Lightning does not prefetch from
      a loader with a length, and with ``num_workers=0`` every ``__getitem__`` of an epoch happens after that
      epoch's ``on_train_epoch_start`` — so the switch is exact in every epoch, including epoch 0 and the
      first epoch after a resume.
    * Worker processes receive a copy of the dataset when the epoch's iterator is created. For epochs after
      the first one of a ``fit`` call that is after the hook, so non-persistent workers work; but the first
      epoch's workers (and Lightning's one-batch prefetch from a loader without a length) start before
      ``on_train_epoch_start``. Passing ``dataset`` explicitly covers ``onset_epoch=0`` and runs resumed after
      the switch: the callback then also switches in ``on_fit_start``, where the restored callback state is
      known. A warning is issued whenever a switch in the first epoch of a ``fit`` call may come too late.
      ``persistent_workers=True`` keeps the old copy for good and is not supported (a warning is issued).
    * Without an explicit ``dataset`` the train dataloader is searched (``DataLoader``/``Subset``/
      ``ConcatDataset``/dicts/lists) for ``DecoyDigits`` of the ``"train"`` split at each epoch start, so
      datasets re-created by ``reload_dataloaders_every_n_epochs`` are found too.

    Args:
        onset_epoch: First epoch (0-based) with predictive decoys.
        dataset: The training dataset(s) to switch; ``None`` finds every :class:`DecoyDigits` with split
            ``"train"`` in ``trainer.train_dataloader``.
        content_noise: Content noise to apply at the switch; ``None`` keeps the dataset's own value.
        epoch_seed: ``epoch_seed`` passed to :meth:`DecoyDigits.set_predictive`.

    Example::

        >>> train = DecoyDigits("train")
        >>> switch = DecoySwitch(onset_epoch=2, dataset=train, content_noise=0.3)
        >>> switch.state_dict()["switched_at_epoch"] is None
        True

        # trainer = lightning.pytorch.Trainer(callbacks=[switch], ...)
        # trainer.fit(model, DataLoader(train, batch_size=64, shuffle=True))
    """

    def __init__(
        self,
        onset_epoch: int = 1,
        dataset: DecoyDigits | Sequence[DecoyDigits] | None = None,
        *,
        content_noise: float | None = None,
        epoch_seed: int = 0,
    ) -> None:
        if onset_epoch < 0:
            raise ValueError(f"onset_epoch must be >= 0, got {onset_epoch}")
        if content_noise is not None and not 0.0 <= content_noise <= 1.0:
            raise ValueError(f"content_noise must be in [0, 1], got {content_noise}")
        if dataset is None:
            self._datasets: list[DecoyDigits] | None = None
        else:
            self._datasets = [dataset] if isinstance(dataset, DecoyDigits) else list(dataset)
            for ds in self._datasets:
                if not isinstance(ds, DecoyDigits) or ds.split != "train":
                    raise ValueError("DecoySwitch needs DecoyDigits datasets of the 'train' split")
        self.onset_epoch = int(onset_epoch)
        self.content_noise = content_noise
        self.epoch_seed = int(epoch_seed)
        #: Epoch at which the switch was first applied (``None`` before), restored on resume.
        self.switched_at_epoch: int | None = None
        self._epochs_started = 0
        self._warned: set[str] = set()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(onset_epoch=self.onset_epoch, epoch_seed=self.epoch_seed)

    @property
    def switched(self) -> bool:
        """Whether the switch has been applied (in this run or in the run a checkpoint came from)."""
        return self.switched_at_epoch is not None

    def _targets(self, trainer: Trainer) -> list[DecoyDigits]:
        if self._datasets is not None:
            return self._datasets
        found: list[DecoyDigits] = []
        _find_decoy_datasets(getattr(trainer, "train_dataloader", None), found, set())
        return [ds for ds in found if ds.split == "train"]

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def _apply(self, datasets: Iterable[DecoyDigits]) -> int:
        changed = 0
        for ds in datasets:
            noise = ds.content_noise if self.content_noise is None else self.content_noise
            if not ds.predictive or ds.content_noise != noise or ds.epoch_seed != self.epoch_seed:
                ds.set_predictive(True, content_noise=noise, epoch_seed=self.epoch_seed)
                changed += 1
        return changed

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epochs_started = 0
        if self._datasets is not None and (self.switched or self.onset_epoch == 0):
            self._apply(self._datasets)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        first_of_run = self._epochs_started == 0
        self._epochs_started += 1
        epoch = int(trainer.current_epoch)
        if epoch < self.onset_epoch:
            return
        datasets = self._targets(trainer)
        if not datasets:
            raise RuntimeError(
                "DecoySwitch found no DecoyDigits 'train' dataset in trainer.train_dataloader; pass dataset="
            )
        loaders = list(_loaders(getattr(trainer, "train_dataloader", None)))
        if any(loader.num_workers > 0 and loader.persistent_workers for loader in loaders):
            self._warn_once(
                "persistent",
                "DecoySwitch: persistent DataLoader workers keep their own copy of the dataset and do not "
                "see the switch; use num_workers=0 or persistent_workers=False",
            )
        changed = self._apply(datasets)
        early_fetch = any(loader.num_workers > 0 or not _has_len(loader) for loader in loaders)
        if changed and first_of_run and early_fetch:
            self._warn_once(
                "stale",
                f"DecoySwitch switched the dataset at the start of the first epoch of this fit (epoch "
                f"{epoch}), but worker processes or Lightning's prefetch already read data for it; use "
                "num_workers=0 or pass dataset= so that the switch happens in on_fit_start",
            )
        if self.switched_at_epoch is None:
            self.switched_at_epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "onset_epoch": self.onset_epoch,
            "content_noise": self.content_noise,
            "epoch_seed": self.epoch_seed,
            "switched_at_epoch": self.switched_at_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.onset_epoch = int(state_dict["onset_epoch"])
        self.content_noise = state_dict["content_noise"]
        self.epoch_seed = int(state_dict["epoch_seed"])
        at = state_dict["switched_at_epoch"]
        self.switched_at_epoch = None if at is None else int(at)
