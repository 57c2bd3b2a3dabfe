"""Choose the fixed probe images: from a tensor, an ``(images, labels)`` pair, a Dataset or a DataLoader."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lightning_xai._rng import isolated_rng
from lightning_xai.probes.inputs import check_images, check_labels, stack_labels

ProbeSource = Tensor | tuple[Tensor, Tensor] | Dataset | DataLoader | Iterable[Any] | None

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
    #: what the caller should say about the draw (images left out, integer images converted)
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def drawn(self) -> bool:
        """Drawn from a loader (as the model receives its batches), not given as tensors or a Dataset."""
        return self.source not in ("tensor", "dataset", "checkpoint")


def split_example(item: Any) -> tuple[Tensor, Any]:
    """Split one dataset item or batch into ``(image_or_images, label_or_labels)`` (labels as the data gives them).

    Understands tensors, ``(x, y, ...)`` tuples/lists and dicts with common keys (``image``/``label``, …).

    Example::

        >>> x, y = split_example((torch.zeros(1, 4, 4), 3))
        >>> tuple(x.shape), int(y)
        ((1, 4, 4), 3)
    """
    if isinstance(item, np.ndarray) and item.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(item)), None
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
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], (Tensor, np.ndarray)):
        return split_example(item[0])[0], item[1] if len(item) > 1 else None
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


#: a batch as the loader yields it -> the batch as the model receives it (Lightning's batch transfer hooks)
Prepare = Callable[[Any], Any]


@dataclass
class Pool:
    """The scanned candidates: images (float32 CPU), their classes (or None and why), and what was said about them."""

    images: Tensor
    labels: Tensor | None
    note: str
    warnings: tuple[str, ...]


#: how many indices of a loader's sampler are read to draw from (a sampler over more items is cut there)
MAX_INDICES = 1_000_000


def _sampled_indices(loader: DataLoader) -> list[int]:
    """The dataset indices the loader visits, in its sampler's order (its ``batch_sampler``'s, flattened). A
    sampler's own generator is left where it was (the global RNGs are the caller's to isolate)."""
    sampler: Iterable[Any] = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
    inner = [sampler, getattr(sampler, "sampler", None)]
    generators = [g for g in (getattr(s, "generator", None) for s in inner) if isinstance(g, torch.Generator)]
    states = [g.get_state() for g in generators]
    indices: list[int] = []
    try:
        for item in sampler:
            if isinstance(item, (list, tuple, Tensor)):
                indices.extend(int(i) for i in item)
            else:
                indices.append(int(item))
            if len(indices) >= MAX_INDICES:
                break
    finally:
        for generator, state in zip(generators, states, strict=True):
            generator.set_state(state)
    return indices


def _batch_size(loader: DataLoader) -> int | None:
    """The loader's batch size (its batch sampler's), 64 when it batches with a sampler of unknown size, None when
    its items are whole batches already (``batch_size=None``)."""
    if loader.batch_size is None and loader.batch_sampler is None:
        return None
    return loader.batch_size or getattr(loader.batch_sampler, "batch_size", None) or 64


def _draw_loader(
    dataset: Dataset,
    indices: Sequence[int],
    batch_size: int | None,
    collate_fn: Callable[[list[Any]], Any] | None,
    seed: int,
) -> DataLoader:
    """A loader over a seeded draw of ``indices`` of ``dataset`` that batches with ``collate_fn`` (the user's: the
    draw goes through the same batching as validation; None: PyTorch's default), in this process."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(indices), generator=generator).tolist()  # the same draw as reading dataset[i] did
    return DataLoader(dataset, batch_size=batch_size, sampler=[indices[i] for i in order], collate_fn=collate_fn)


def _scan(loader: Iterable[Any], max_scan: int, source: str, prepare: Prepare | None) -> Pool:
    """Read batches (through ``prepare``, as the model receives them) until ``max_scan`` examples are collected."""
    images: list[Tensor] = []
    labels: list[Any] = []
    for batch in loader:
        x, y = split_example(prepare(batch) if prepare is not None else batch)
        if x.ndim == 3 and isinstance(loader, DataLoader) and loader.batch_sampler is not None:  # batched: (B, H, W)
            raise ValueError(
                f"`probes`: the {source}'s batches hold 3-D images {tuple(x.shape)} (B, H, W), but the monitor "
                "explains (N, C, H, W) inputs. Add the channel where the batch is made (`x.unsqueeze(1)` in the "
                "collate_fn or `on_after_batch_transfer`, not in `forward`), or pass `probes=` (N, 1, H, W) with "
                "`forward_fn=lambda model, x: model(x[:, 0])`."
            )
        if x.ndim == 3:  # an unbatched iterable: one image per item
            x, y = x.unsqueeze(0), [y]
        batched = (isinstance(y, Tensor) and y.ndim > 0) or (isinstance(y, (list, tuple)) and len(y) == len(x))
        for i in range(x.shape[0]):
            images.append(x[i])
            labels.append(y[i] if batched else None)
        if len(images) >= max_scan:
            break
    return _stack(images[:max_scan], labels[:max_scan], source)


def _stack(images: list[Tensor], labels: list[Any], source: str) -> Pool:
    """The images as a float32 ``(N, C, H, W)`` tensor and their classes (or None with the reason when any label is
    not one class). Images with NaN or Inf are left out and integer images converted with ``.float()``, each said."""
    if not images:
        raise ValueError(f"`probes`: the {source} is empty; pass `probes=` explicitly.")
    try:
        stacked = torch.stack([img.detach().to("cpu", copy=True) for img in images])
    except RuntimeError as err:
        raise ValueError(
            f"`probes`: cannot stack the images of the {source} ({err}); pass `probes=` explicitly."
        ) from None
    said: list[str] = []
    if not stacked.is_floating_point() and not stacked.is_complex():
        said.append(
            f"the {source} yields {stacked.dtype} images after its collate_fn and batch hooks, so the probes are them "
            "as floats (.float(), no scaling); if your validation_step converts them (e.g. x.float() / 255), move "
            "that into the collate_fn or `on_after_batch_transfer`, or pass `forward_fn=` or `probes=`"
        )
        stacked = stacked.float()
    if stacked.is_floating_point():
        finite = torch.isfinite(stacked).flatten(1).all(dim=1)
        if not bool(finite.all()):
            if not bool(finite.any()):
                raise ValueError(f"`probes`: every image of the {source} holds NaN or Inf; pass finite images.")
            said.append(
                f"{int((~finite).sum())} of {len(finite)} images scanned from the {source} hold NaN or Inf "
                "and are not used as probes"
            )
            stacked, labels = stacked[finite], [label for label, ok in zip(labels, finite.tolist(), strict=True) if ok]
    stacked = check_images(stacked.float(), "probes", f"drawn from the {source}")
    classes, note = stack_labels(labels, source)
    return Pool(stacked, classes, note, tuple(said))


def collect_probes(
    source: Any,
    num_probes: int,
    seed: int,
    max_scan: int = 0,
    loader_name: str = "validation dataloader",
    prepare: Prepare | None = None,
) -> ProbeSet:
    """Build the fixed probe set from what the user gave, or from the validation data as the model receives it.

    Args:
        source: a ``(N, C, H, W)`` tensor (all of it is used), an ``(images, labels)`` pair (all used), a
            map-style ``Dataset`` (``num_probes`` drawn, batched by PyTorch's default collate), a ``DataLoader`` or
            any iterable of batches (``num_probes`` drawn from what it yields, class-balanced when labelled). A
            DataLoader over a map-style dataset is drawn from the indices its sampler visits, in a seeded order, and
            batched with its own ``collate_fn``; any other iterable is read from its first batches.
        num_probes: how many to draw from a Dataset/DataLoader/iterable.
        seed: makes the draw deterministic; the global RNGs are never touched.
        max_scan: how many items to scan for class balance (default ``max(64 * num_probes, 512)``).
        loader_name: what a loader source is called in messages (``ProbeSet.source``).
        prepare: applied to each batch a loader yields, before the images are taken: what Lightning does to a
            batch before the model sees it (``on_before_batch_transfer``, ``transfer_batch_to_device``,
            ``on_after_batch_transfer``).

    Example::

        >>> probes = collect_probes((torch.rand(6, 1, 8, 8), torch.arange(6)), num_probes=4, seed=0)
        >>> len(probes), probes.labels.tolist()
        (6, [0, 1, 2, 3, 4, 5])
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.randint(0, 255, (20, 1, 4, 4), dtype=torch.uint8), torch.arange(20) % 2)
        >>> loader = DataLoader(data, batch_size=5, collate_fn=lambda items: (
        ...     torch.stack([x for x, _ in items]).float() / 255, torch.stack([y for _, y in items])))
        >>> probes = collect_probes(loader, num_probes=4, seed=0)
        >>> float(probes.images.max()) <= 1.0, probes.labels.tolist()
        (True, [0, 1, 0, 1])
    """
    max_scan = max_scan or max(64 * num_probes, 512)
    with isolated_rng():
        if isinstance(source, Tensor):
            return ProbeSet(check_images(source), None, "tensor")
        if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], Tensor):
            images = check_images(source[0])
            return ProbeSet(images, check_labels(source[1], len(images)), "tensor")
        if isinstance(source, DataLoader) and _map_style(source.dataset):
            indices = _sampled_indices(source)
            size = _batch_size(source)
            loader = _draw_loader(source.dataset, indices, size, source.collate_fn, seed)
            pool, kind = _scan(loader, max_scan, loader_name, prepare), loader_name
        elif isinstance(source, DataLoader):  # an iterable dataset: a loader of its own, never the user's iterator
            loader = DataLoader(source.dataset, batch_size=_batch_size(source), collate_fn=source.collate_fn)
            pool, kind = _scan(loader, max_scan, loader_name, prepare), loader_name
        elif isinstance(source, Dataset) and _map_style(source):
            loader = _draw_loader(source, range(len(source)), 64, None, seed)  # type: ignore[arg-type]
            pool, kind = _scan(loader, max_scan, "dataset", None), "dataset"
        elif isinstance(source, Iterable) and not isinstance(source, (str, bytes, Mapping)):
            pool, kind = _scan(source, max_scan, loader_name, prepare), loader_name
        else:
            raise ValueError(
                f"`probes` must be None, a Tensor (N, C, H, W), a tuple (images, labels), a torch Dataset or a "
                f"DataLoader; got {type(source).__name__}."
            )
        chosen, chosen_labels = select_probes(pool.images, pool.labels, num_probes, seed)
        return ProbeSet(chosen, chosen_labels, kind, pool.note, pool.warnings)


def _map_style(dataset: Any) -> bool:
    """A dataset read by index (not an ``IterableDataset``) whose length is known."""
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__"):
        return False
    try:
        len(dataset)
    except TypeError:
        return False
    return True


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
