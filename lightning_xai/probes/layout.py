"""Reading one batch (or dataset item) of the user's data: where its image and its label are."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_xai.probes.inputs import one_class, stack_labels

IMAGE_KEYS = ("image", "images", "img", "input", "inputs", "x", "pixel_values")
LABEL_KEYS = ("label", "labels", "target", "targets", "y", "class")


def _numeric(value: Any) -> Any:
    """A numeric numpy array (not 0-d) as a tensor (a collate_fn's images or labels), else ``value`` as it is."""
    if isinstance(value, np.ndarray) and value.ndim and value.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(value))
    return value


def split_example(item: Any) -> tuple[Tensor, Any]:
    """Split a dataset item or batch (a tensor, ``(x, y, ...)`` or a dict with common keys) into ``(x, y)``; numeric
    arrays come back as tensors."""
    if isinstance(item, np.ndarray) and item.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(item)), None
    if isinstance(item, Tensor):
        return item, None
    if dataclasses.is_dataclass(item) and not isinstance(item, type):  # Lightning moves dataclass batches too
        item = {field.name: getattr(item, field.name) for field in dataclasses.fields(item)}
    if isinstance(item, Mapping):
        image = next((item[k] for k in IMAGE_KEYS if k in item), None)
        if not isinstance(image, Tensor):
            raise ValueError(
                f"`probes`: cannot find the image in a dict (or dataclass) with keys {sorted(item)}; expected one of "
                f"{list(IMAGE_KEYS)}. Pass `probes=(images, labels)` explicitly."
            )
        return image, _numeric(next((item[k] for k in LABEL_KEYS if k in item), None))
    if isinstance(item, (tuple, list)) and item and _inputs(item[0]):
        image = _image_of(item[0])
        return image, _numeric(_label_of(image, item[1:]))
    raise ValueError(
        f"`probes`: cannot read an image from an item of type {type(item).__name__}. Items must be a tensor, "
        "an (image, label) tuple or a dict (or dataclass) with an 'image' key; or pass `probes=(images, labels)` "
        "explicitly."
    )


def _inputs(first: Any) -> bool:
    """Whether a tuple's first item holds the image: a tensor or array, a list of images (one per example), or the
    model's inputs ``(image, metadata, ...)`` whose first is the image."""
    if isinstance(first, (Tensor, np.ndarray)):
        return True
    return isinstance(first, (tuple, list)) and bool(first) and isinstance(first[0], (Tensor, np.ndarray))


def _listed(first: Any) -> bool:
    """A list of images, one ``(C, H, W)`` tensor per example (a collate_fn that does not stack them)."""
    return isinstance(first, (tuple, list)) and all(isinstance(v, Tensor) and v.ndim == 3 for v in first)


def _image_of(first: Any) -> Tensor:
    """The image of a tuple's first item: itself, a list of images stacked, or the first of the model's inputs."""
    if not isinstance(first, (tuple, list)):
        return split_example(first)[0]
    if not _listed(first):
        return split_example(first[0])[0]
    sizes = sorted({tuple(v.shape) for v in first})
    if len(sizes) > 1:
        raise ValueError(
            f"`probes`: the batches' images are a list of {len(first)} tensors of different sizes ({sizes[:3]}), and "
            "the monitor explains one (N, C, H, W) batch of probes. Pass `probes=(images, labels)` of one size (as "
            "the model receives them, with `forward_fn=` if it takes a list)."
        )
    return torch.stack(list(first))


def _per_pixel(value: Any, image: Tensor) -> bool:
    """A mask or another image: as many dims as one image (or more), never a label."""
    return isinstance(value, (Tensor, np.ndarray)) and value.ndim >= image.ndim - 1


def _classes(value: Any, image: Tensor) -> bool:
    """Whether ``value`` reads as one class per image of ``image`` (ints, integral floats, one-hot rows)."""
    if isinstance(value, (Mapping, str, bytes)) or value is None or _per_pixel(value, image):
        return False
    if image.ndim < 4:  # one example
        return one_class(value)[0] is not None
    value = _numeric(value)
    if not isinstance(value, (Tensor, list, tuple)) or getattr(value, "ndim", 1) == 0 or len(value) != len(image):
        return False  # a 0-d tensor (one value for the batch) has no len()
    return stack_labels(list(value))[0] is not None


def _not_a_label(value: Any, image: Tensor) -> bool:
    """An item that is never the label: per pixel (a mask), a dict (metadata) or None (strings may be class names:
    said as such)."""
    return value is None or isinstance(value, Mapping) or _per_pixel(value, image)


def _label_of(image: Tensor, rest: Sequence[Any]) -> Any:
    """The label among what follows the image in a tuple: the first item that can be one (so a mask or a dict of
    metadata before it is passed over, as in ``(image, mask, label)``), else the second item; None when nothing
    follows."""
    if not rest:
        return None
    return next((value for value in rest if not _not_a_label(value, image)), rest[0])


def _label_at(item: Any) -> int | None:
    """The position in a tuple batch of the label :func:`split_example` reads (None: not a tuple batch, or nothing
    after the image)."""
    if not isinstance(item, (tuple, list)) or len(item) < 2 or not _inputs(item[0]):
        return None
    label = _label_of(_image_of(item[0]), item[1:])
    return next((i for i, value in enumerate(item) if i and value is label), None)


def layout_note(item: Any, source: str) -> str:
    """What reading ``item`` (a batch of ``source``) assumed, to say once: a list of images stacked, the model's other
    inputs left out, the label's position when it is not the second item or another item could be it too."""
    if not isinstance(item, (tuple, list)) or not item or not _inputs(item[0]):
        return ""
    said, first = [], item[0]
    if isinstance(first, (tuple, list)) and _listed(first):
        said.append(
            f"the {source}'s images are a list of tensors, so the probes are them stacked (N, C, H, W) and the model "
            "is called with that tensor"
        )
    elif isinstance(first, (tuple, list)):
        said.append(
            f"the {source}'s batches are ((inputs), label) with {len(first)} inputs, so the probes are the first "
            "(the image) and the model is called with it alone; pass `forward_fn=` to give it the other inputs (the "
            "probes' own are not kept)"
        )
    image, at = _image_of(first), _label_at(item)
    if at is None or not _classes(item[at], image):
        return "; ".join(said)
    others = [str(i) for i, value in enumerate(item) if i and i != at and _classes(value, image)]
    if at != 1 or others:
        second = f"whose second item is {_kind(item[1], image)}, so" if at != 1 else "and"
        also = f"; item{'s' if len(others) > 1 else ''} {', '.join(others)} could be one class per image too"
        said.append(
            f"the {source}'s batches are tuples {second} the probes' labels are item {at} (the image is item 0"
            f"{also if others else ''}); if that is not each image's class (an index, a weight), pass "
            "`probes=(images, labels)` or `target='predicted'`"
        )
    return "; ".join(said)


def _kind(value: Any, image: Tensor) -> str:
    """What a tuple item before the label looks like."""
    if _per_pixel(value, image):
        return "per pixel (a mask)"
    if isinstance(value, Mapping):
        return "a dict"
    return "None"


def unlabeled_keys(item: Any) -> str:
    """Where ``item`` is a dict (or dataclass) batch with keys besides its image but none of :data:`LABEL_KEYS`: what
    to say (the labels may be under another name), else ''."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        item = {field.name: None for field in dataclasses.fields(item)}
    if not isinstance(item, Mapping) or any(k in item for k in LABEL_KEYS):
        return ""
    others = sorted(str(k) for k in item if k not in IMAGE_KEYS)
    if not others:
        return ""
    return (
        f"dicts (or dataclasses) with keys {sorted(map(str, item))}, none of which is a label key {list(LABEL_KEYS)} "
        f"(if one of {others} is the class, name it `label` where the batch is made)"
    )
