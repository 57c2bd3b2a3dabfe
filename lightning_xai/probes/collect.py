"""Choose the fixed probe images: from a tensor, an ``(images, labels)`` pair, a Dataset or a DataLoader."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai.explain.guard import isolated_rng
from lightning_xai.probes.inputs import check_images, check_labels, stack_labels

ProbeSource = Tensor | tuple[Tensor, Tensor] | Dataset | DataLoader | None

_IMAGE_KEYS = ("image", "images", "img", "input", "inputs", "x", "pixel_values")
_LABEL_KEYS = ("label", "labels", "target", "targets", "y", "class")


@dataclass
class ProbeSet:
    """The probe images (CPU, float) and their labels (CPU int64) or None when unlabeled (``note`` says why, when
    the data had labels that are not one class per image)."""

    images: Tensor
    labels: Tensor | None
    source: str
    note: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])


def split_example(item: Any) -> tuple[Tensor, Any]:
    """Split one dataset item or batch into ``(image_or_images, label_or_labels)`` (labels as the data gives them).

    Understands tensors, ``(x, y, ...)`` tuples/lists and dicts with common keys (``image``/``label``, …).

    Example::

        >>> x, y = split_example((torch.zeros(1, 4, 4), 3))
        >>> tuple(x.shape), int(y)
        ((1, 4, 4), 3)
    """
    if isinstance(item, Tensor):
        return item, None
    if isinstance(item, Mapping):
        image = next((item[k] for k in _IMAGE_KEYS if k in item), None)
        label = next((item[k] for k in _LABEL_KEYS if k in item), None)
        if not isinstance(image, Tensor):
            raise ValueError(
                f"`probes`: cannot find the image in a dict with keys {sorted(item)}; expected one of "
                f"{list(_IMAGE_KEYS)}. Pass `probes=(images, labels)` explicitly."
            )
        return image, label
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], Tensor):
        return item[0], item[1] if len(item) > 1 else None
    raise ValueError(
        f"`probes`: cannot read an image from an item of type {type(item).__name__}. Items must be a tensor, "
        "an (image, label) tuple or a dict with an 'image' key; or pass `probes=(images, labels)` explicitly."
    )


def balanced_order(labels: Sequence[int], count: int) -> list[int]:
    """Pick ``count`` positions round-robin over the classes (ascending), keeping the given order per class.

    Example::

        >>> balanced_order([1, 1, 0, 2, 0, 1], 4)
        [2, 0, 3, 4]
    """
    per_class: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        per_class.setdefault(int(label), []).append(position)
    queues = [per_class[c] for c in sorted(per_class)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < count and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(chosen) < count:
                chosen.append(queue[depth])
        depth += 1
    return chosen


def select_probes(images: Tensor, labels: Tensor | None, num_probes: int, seed: int) -> tuple[Tensor, Tensor | None]:
    """Deterministically choose ``num_probes`` rows from a pool, class-balanced when labels exist."""
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(images.shape[0], generator=generator)
    if labels is None:
        chosen = permutation[:num_probes]
        return images[chosen], None
    order = balanced_order(labels[permutation].tolist(), num_probes)
    chosen = permutation[torch.tensor(order, dtype=torch.long)]
    return images[chosen], labels[chosen]


Pool = tuple[Tensor, Tensor | None, str]


def _dataset_pool(dataset: Dataset, num_probes: int, seed: int, max_scan: int, source: str) -> Pool:
    """Read up to ``max_scan`` items of a map-style dataset in a seeded order."""
    length = len(dataset)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(length, generator=generator)[: max(max_scan, num_probes)].tolist()
    images: list[Tensor] = []
    labels: list[Any] = []
    for index in indices:
        image, label = split_example(dataset[index])
        images.append(image)
        labels.append(label)
    return _stack(images, labels, source)


def _loader_pool(loader: Iterable[Any], max_scan: int, source: str) -> Pool:
    """Read batches from an iterable until ``max_scan`` examples are collected (RNG isolated by the caller)."""
    images: list[Tensor] = []
    labels: list[Any] = []
    seen = 0
    for batch in loader:
        x, y = split_example(batch)
        batched = (isinstance(y, Tensor) and y.ndim > 0) or (isinstance(y, (list, tuple)) and len(y) == len(x))
        for i in range(x.shape[0]):
            images.append(x[i])
            labels.append(y[i] if batched else None)
        seen += x.shape[0]
        if seen >= max_scan:
            break
    return _stack(images, labels, source)


def _stack(images: list[Tensor], labels: list[Any], source: str) -> Pool:
    """The images as a float32 ``(N, C, H, W)`` tensor (as the model receives them: integer images converted with
    ``.float()``), and their classes, or None with the reason when any label is not one class."""
    if not images:
        raise ValueError(f"`probes`: the {source} is empty; pass `probes=` explicitly.")
    try:
        stacked = torch.stack([img.detach().to("cpu", copy=True) for img in images]).float()
    except RuntimeError as err:
        raise ValueError(
            f"`probes`: cannot stack the images of the {source} ({err}); pass `probes=` explicitly."
        ) from None
    stacked = check_images(stacked, "probes", f"drawn from the {source}")
    classes, note = stack_labels(labels, source)
    return stacked, classes, note


def collect_probes(
    source: ProbeSource, num_probes: int, seed: int, max_scan: int = 0, loader_name: str = "validation dataloader"
) -> ProbeSet:
    """Build the fixed probe set from what the user gave (or from the validation dataloader).

    Args:
        source: a ``(N, C, H, W)`` tensor (all of it is used), an ``(images, labels)`` pair (all used), a
            map-style ``Dataset`` or a ``DataLoader`` (``num_probes`` drawn, class-balanced when labelled).
        num_probes: how many to draw from a Dataset/DataLoader.
        seed: makes the draw deterministic; the global RNGs are never touched.
        max_scan: how many items to scan for class balance (default ``max(64 * num_probes, 512)``).
        loader_name: what a ``DataLoader`` source is called in messages (``ProbeSet.source``).

    Example::

        >>> probes = collect_probes((torch.rand(6, 1, 8, 8), torch.arange(6)), num_probes=4, seed=0)
        >>> len(probes), probes.labels.tolist()
        (6, [0, 1, 2, 3, 4, 5])
    """
    max_scan = max_scan or max(64 * num_probes, 512)
    with isolated_rng():
        if isinstance(source, Tensor):
            return ProbeSet(check_images(source), None, "tensor")
        if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], Tensor):
            images = check_images(source[0])
            return ProbeSet(images, check_labels(source[1], len(images)), "tensor")
        if isinstance(source, DataLoader):
            dataset = source.dataset
            if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
                pool = _dataset_pool(dataset, num_probes, seed, max_scan, loader_name)
            else:
                pool = _loader_pool(source, max_scan, loader_name)
            kind = loader_name
        elif isinstance(source, Dataset):
            pool = _dataset_pool(source, num_probes, seed, max_scan, "dataset")
            kind = "dataset"
        else:
            raise ValueError(
                f"`probes` must be None, a Tensor (N, C, H, W), a tuple (images, labels) or a torch Dataset; "
                f"got {type(source).__name__}."
            )
        chosen, chosen_labels = select_probes(pool[0], pool[1], num_probes, seed)
        return ProbeSet(chosen, chosen_labels, kind, pool[2])


def resolve_masks(spec: Tensor | Callable[[Tensor, Tensor | None], Tensor], probes: ProbeSet) -> Tensor:
    """One boolean ``(H, W)`` mask per probe, from a tensor (or array) or a callable ``(images, labels) -> masks``."""
    if callable(spec):
        try:
            masks = spec(probes.images.clone(), None if probes.labels is None else probes.labels.clone())
        except Exception as err:
            raise ValueError(
                f"`probe_masks` raised {type(err).__name__}: {err} when called with the probes (images "
                f"{tuple(probes.images.shape)}, labels {'None' if probes.labels is None else 'a (N,) tensor'})."
            ) from err
    else:
        masks = spec
    try:
        masks = torch.as_tensor(masks).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"`probe_masks` must be a tensor of booleans (N, H, W), got {type(masks).__name__}.") from err
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    expected = (len(probes), *probes.images.shape[-2:])
    if tuple(masks.shape) != expected:
        raise ValueError(
            f"`probe_masks` has shape {tuple(masks.shape)} but the {len(probes)} probes need one (H, W) mask each: "
            f"{expected}. With probes drawn from the validation data, pass a callable `(images, labels) -> masks`."
        )
    return masks.bool()
