"""Choose the fixed probe images: from a tensor, an ``(images, labels)`` pair, a Dataset or a DataLoader."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from lightning.fabric.utilities.data import sized_len
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lightning_xai._rng import isolated_rng
from lightning_xai.probes.inputs import check_images, check_labels, stack_labels
from lightning_xai.probes.layout import layout_note, split_example, unlabeled_keys

#: how many indices of a loader's sampler are read to draw from (a sampler over more items is cut there)
MAX_INDICES = 1_000_000


@dataclass
class ProbeSet:
    """The probe images (CPU, float) and their labels (CPU int64), or None when unlabeled (``note`` says why, when
    the data had labels that are not one class per image); ``warnings``: what to say about the draw."""

    images: Tensor
    labels: Tensor | None
    source: str
    note: str = ""
    warnings: tuple[str, ...] = ()
    uncovered: tuple[int, ...] = ()  # classes of the data that no probe has (drawn with fewer probes than classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def drawn(self) -> bool:
        """Drawn from the validation (test) data or a loader given as ``probes=``, not given as tensors or a Dataset
        (a Dataset's batches go through the hooks too, but its items are the user's own choice)."""
        return self.source not in ("tensor", "dataset", "checkpoint")


def balanced_order(labels: Sequence[int], count: int) -> list[int]:
    """Pick ``count`` positions round-robin over the classes (ascending), keeping the given order per class."""
    per_class: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        per_class.setdefault(int(label), []).append(position)
    rounds = itertools.zip_longest(*(per_class[c] for c in sorted(per_class)))
    return [p for row in rounds for p in row if p is not None][:count]


def _sampled_indices(loader: DataLoader) -> list[int]:
    """The dataset indices the loader visits, in its sampler's order; a sampler's own generator is left where it was."""
    sampler: Iterable[Any] = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
    generators = [getattr(s, "generator", None) for s in (sampler, getattr(sampler, "sampler", None))]
    states = [(g, g.get_state()) for g in generators if isinstance(g, torch.Generator)]
    indices: list[int] = []
    try:
        for item in sampler:
            indices += [int(i) for i in item] if isinstance(item, (list, tuple, Tensor)) else [int(item)]
            if len(indices) >= MAX_INDICES:
                break
    finally:
        for generator, state in states:
            generator.set_state(state)
    return indices


def _batch_size(loader: DataLoader) -> int | None:
    """The loader's batch size, 64 with a batch sampler of unknown size, None when its items are whole batches."""
    if loader.batch_size is None and loader.batch_sampler is None:
        return None
    return loader.batch_size or getattr(loader.batch_sampler, "batch_size", None) or 64


def _scan(
    loader: Iterable[Any], max_scan: int, source: str, prepare: Callable[[Any], Any] | None, given: bool = False
) -> ProbeSet:
    """Up to ``max_scan`` examples as the model receives them; non-finite images left out, integers ``.float()``."""
    images: list[Tensor] = []
    labels: list[Any] = []
    layout: str | None = None  # what reading the first batch assumed (where the label is, ...)
    keys = ""  # the keys of dict batches without a label key
    for batch in loader:
        try:
            prepared = prepare(batch) if prepare is not None else batch
        except Exception as err:
            if not given:  # the validation data's own pipeline: Lightning fails the same way
                raise
            what, fix = (
                (
                    "the probe Dataset, which is collated with PyTorch's default collate",
                    "a DataLoader with your collate_fn (e.g. `probes=val_loader`)",
                )
                if source == "dataset"
                else (
                    "the `probes=` loader",
                    "a loader whose batches are like the validation loader's (if it is that loader, the error is in "
                    "the hooks themselves: see the error above)",
                )
            )
            raise ValueError(
                "`probes`: the batch hooks (`on_before_batch_transfer`, `on_after_batch_transfer`) or the move to "
                f"the device failed on a batch of {what} ({type(err).__name__}: {err}); the probes go through the "
                f"same hooks as validation batches. Pass {fix}, or tensors as the model receives them."
            ) from err
        x, y = split_example(prepared)  # a collate_fn's labels as an array: a tensor
        if layout is None:
            layout, keys = layout_note(prepared, source), unlabeled_keys(prepared)
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
        images += list(x)
        labels += list(y) if batched else [None] * len(x)
        if len(images) >= max_scan:
            break
    images, labels = images[:max_scan], labels[:max_scan]
    if not images:
        raise ValueError(f"`probes`: the {source} is empty; pass `probes=` explicitly.")
    try:
        stacked = torch.stack([img.detach().to("cpu", copy=True) for img in images])
    except RuntimeError as err:
        raise ValueError(
            f"`probes`: cannot stack the images of the {source} ({err}); pass `probes=` explicitly."
        ) from None
    said: list[str] = []
    collate, where = (
        ("PyTorch's default collate", "the Dataset") if source == "dataset" else ("its collate_fn", "the collate_fn")
    )
    if not stacked.is_floating_point() and not stacked.is_complex():
        said.append(
            f"the {source} yields {stacked.dtype} images after {collate} and the batch hooks, so the probes are "
            "them as floats (.float(), no scaling); if your validation_step converts them (e.g. x.float() / 255), "
            f"move that into {where} or `on_after_batch_transfer`, or pass float `probes=` tensors (or "
            "`forward_fn=`)"
        )
        stacked = stacked.float()
    finite = torch.isfinite(stacked).flatten(1).all(dim=1)
    if stacked.is_floating_point() and not bool(finite.all()):
        if not bool(finite.any()):
            raise ValueError(f"`probes`: every image of the {source} holds NaN or Inf; pass finite images.")
        said.append(
            f"{int((~finite).sum())} of {len(finite)} images scanned from the {source} hold NaN or Inf "
            "and are not used as probes"
        )
        stacked, labels = stacked[finite], [label for label, ok in zip(labels, finite.tolist(), strict=True) if ok]
    classes, why = stack_labels(labels)
    note = f"the {source}'s labels are {why}" if why not in ("", "no label") else ""
    note = f"the {source}'s batches are {keys}" if why == "no label" and keys else note
    if layout:
        said.append(layout)
    checked = check_images(stacked.float(), "probes", f"drawn from the {source}")
    return ProbeSet(checked, classes, source, note, tuple(said))


def collect_probes(
    source: Any,
    num_probes: int,
    seed: int,
    max_scan: int = 0,
    loader_name: str = "validation dataloader",
    prepare: Callable[[Any], Any] | None = None,
    given: bool = False,
) -> ProbeSet:
    """Build the fixed probe set from what the user gave, or from the validation data as the model receives it.

    Args:
        source: ``(N, C, H, W)`` images or ``(images, labels)`` (all used); a map-style Dataset (batched with
            PyTorch's default collate), a DataLoader or any iterable of batches (``num_probes`` drawn, class-balanced
            when labelled; a DataLoader over a map-style dataset from its sampler's indices, in a seeded order,
            batched with its ``collate_fn``).
        num_probes: how many to draw from a Dataset/DataLoader/iterable.
        seed: makes the draw deterministic; the global RNGs are never touched.
        max_scan: how many items to scan for class balance (default ``max(64 * num_probes, 512)``).
        loader_name: a loader source's name in messages (``ProbeSet.source``); ``prepare``: applied to the batches of a
            Dataset, DataLoader or iterable (the batch hooks: what the model receives); ``given``: the source is
            the user's ``probes=`` (a failing ``prepare`` is then a named ``ValueError``).

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
        if isinstance(source, Dataset) and _indexable(source):
            source, loader_name, given = DataLoader(source, batch_size=64), "dataset", True  # the default collate
        sampler: list[Any] | None = None
        if isinstance(source, DataLoader) and _indexable(source.dataset):  # a seeded draw of its indices
            indices = sorted(_sampled_indices(source))  # which it visits, not its order (a shuffle's: global RNG)
            drawn = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed)).tolist()
            sampler = [indices[i] for i in drawn]
        elif not isinstance(source, Iterable) or isinstance(source, (str, bytes, Mapping)):
            raise ValueError(
                f"`probes` must be None, a Tensor (N, C, H, W), a tuple (images, labels), a torch Dataset or a "
                f"DataLoader; got {type(source).__name__}."
            )
        if isinstance(source, DataLoader):  # a loader of its own (an iterable dataset: never the user's iterator)
            pool = _scan_loader(source, sampler, max_scan, loader_name, prepare, given)
        else:
            pool = _scan(source, max_scan, loader_name, prepare, given)
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
        if pool.labels is not None:  # class-balanced
            order = order[torch.tensor(balanced_order(pool.labels[order].tolist(), num_probes), dtype=torch.long)]
        order = order[:num_probes]
        labels = None if pool.labels is None else pool.labels[order]
        return replace(pool, images=pool.images[order], labels=labels, uncovered=_uncovered(pool.labels, labels))


def _uncovered(seen: Tensor | None, chosen: Tensor | None) -> tuple[int, ...]:
    """The classes of the scanned examples that no probe has (more classes than probes)."""
    if seen is None or chosen is None:
        return ()
    return tuple(sorted(set(seen.tolist()) - set(chosen.tolist())))


class _ReadError(Exception):
    """Reading a batch failed (the dataset, its collate_fn or a worker): ``err``."""

    def __init__(self, err: Exception) -> None:
        super().__init__(str(err))
        self.err = err


class _Reading(DataLoader):
    """A DataLoader whose failures while reading are :class:`_ReadError`, told apart from the batch hooks' failures
    and the checks of what it read. A batch that cannot be read is skipped (``skipped``: their errors) once another
    was read, or until :attr:`TRIES` in a row failed: a few bad items that validation may never read (its
    ``limit_val_batches``, a flaky read) do not stop the run; a dataset that cannot be read here at all fails."""

    #: batches in a row that may fail before the reading fails (before any batch was read, or to end it after)
    TRIES = 3

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self.skipped: list[Exception] = []
        try:  # an iterable dataset is opened here (its iter() runs in the fetcher), workers are started here
            batches = super().__iter__()
        except StopIteration as err:  # never a bare StopIteration out of the monitor (it would end a caller's loop)
            raise _ReadError(RuntimeError(f"the dataset's iter() raised StopIteration {err!r}")) from err
        except Exception as err:
            raise _ReadError(err) from err
        read, failing = False, 0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                if not read and self.skipped:
                    raise _ReadError(self.skipped[0]) from None
                return
            except Exception as err:
                self.skipped.append(err)
                failing += 1
                if failing < self.TRIES:
                    continue
                if read:  # enough read around them: the probes come from those
                    return
                raise _ReadError(self.skipped[0]) from err
            read, failing = True, 0
            yield batch


def _scan_loader(
    loader: DataLoader,
    sampler: list[Any] | None,
    max_scan: int,
    source: str,
    prepare: Callable[[Any], Any] | None,
    given: bool,
) -> ProbeSet:
    """:func:`_scan` of ``loader``'s dataset, batched with its ``collate_fn`` (from ``sampler``'s indices), read in this
    process; where that fails and ``loader`` has workers (a dataset that opens its storage in ``worker_init_fn``),
    read again through one worker of the loader's own kind (its ``worker_init_fn`` and start method), else a named
    ``ValueError``."""
    kwargs: dict[str, Any] = {"batch_size": _batch_size(loader), "sampler": sampler, "collate_fn": loader.collate_fn}
    try:
        return _skipped(_Reading(loader.dataset, **kwargs), max_scan, source, prepare, given)
    except _ReadError as read:  # the dataset or collate_fn failed (not the hooks, not the checks of what it gave)
        first = read.err
        if not loader.num_workers:
            raise ValueError(
                f"`probes`: the {source}'s examples could not be read for the probes ({type(first).__name__}: "
                f"{first}). The monitor reads its probes once, before training, with the loader's dataset and "
                "collate_fn. Pass them as tensors as the model receives them, `probes=(images, labels)`."
            ) from first
    workers = {
        "num_workers": 1,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": torch.Generator().manual_seed(0),  # the workers' seeds: never the global RNG
    }
    try:
        return _skipped(_Reading(loader.dataset, **kwargs, **workers), max_scan, source, prepare, given)
    except _ReadError as read:
        err = read.err
        raise ValueError(
            f"`probes`: the {source}'s examples could not be read for the probes, neither in this process "
            f"({type(first).__name__}: {first}) nor in one worker of the loader's kind ({_last_line(err)}). "
            "The monitor reads its probes once, before training, with the loader's dataset, collate_fn and "
            "worker_init_fn. Pass them as tensors as the model receives them, `probes=(images, labels)`, or a "
            "`Dataset` that can be read in the main process."
        ) from err


def _skipped(reading: _Reading, max_scan: int, source: str, prepare: Any, given: bool) -> ProbeSet:
    """:func:`_scan` of ``reading``, saying once how many batches it skipped (and the first error)."""
    pool = _scan(reading, max_scan, source, prepare, given)
    if reading.skipped:
        first = reading.skipped[0]
        said = f"{len(reading.skipped)} batch(es) of the {source} could not be read and are not used as probes " + (
            f"(the first: {type(first).__name__}: {_last_line(first)})"
        )
        pool = replace(pool, warnings=(*pool.warnings, said))
    return pool


def _last_line(err: BaseException) -> str:
    """The last line of an error's text (a worker's error holds its traceback)."""
    return (str(err).strip().splitlines() or [""])[-1]


def _indexable(dataset: Any) -> bool:
    """A dataset read by index (not an ``IterableDataset``) that has a length."""
    indexed = hasattr(dataset, "__getitem__") and not isinstance(dataset, IterableDataset)
    return indexed and sized_len(dataset) is not None
