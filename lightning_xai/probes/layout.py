"""Reading one batch (or dataset item) of the user's data: where its image and its label are."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

IMAGE_KEYS = ("image", "images", "img", "input", "inputs", "x", "pixel_values")
LABEL_KEYS = ("label", "labels", "target", "targets", "y", "class")


def split_example(item: Any) -> tuple[Tensor, Any]:
    """Split a dataset item or batch (a tensor, ``(x, y, ...)`` or a dict with common keys) into ``(x, y)``."""
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
        return image, next((item[k] for k in LABEL_KEYS if k in item), None)
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], (Tensor, np.ndarray)):
        image = split_example(item[0])[0]
        return image, _label_of(image, item[1:])
    raise ValueError(
        f"`probes`: cannot read an image from an item of type {type(item).__name__}. Items must be a tensor, "
        "an (image, label) tuple or a dict (or dataclass) with an 'image' key; or pass `probes=(images, labels)` "
        "explicitly."
    )


def _label_of(image: Tensor, rest: Sequence[Any]) -> Any:
    """The label among what follows the image in a tuple: the second item, unless it is per pixel (a mask, as in
    ``(image, mask, label)``) and a later item is not; None when nothing follows."""
    if not rest:
        return None

    def per_pixel(value: Any) -> bool:  # a mask or another image: as many dims as one image (or more), never a label
        return isinstance(value, (Tensor, np.ndarray)) and value.ndim >= image.ndim - 1

    return next((value for value in rest if not per_pixel(value)), rest[0])


def label_past_a_mask(item: Any) -> int | None:
    """The position in a tuple batch of the label :func:`split_example` reads when it is not the second item (that
    one is per pixel: a mask), else None."""
    if not isinstance(item, (tuple, list)) or len(item) < 3 or not isinstance(item[0], (Tensor, np.ndarray)):
        return None
    label = _label_of(split_example(item[0])[0], item[1:])
    return None if label is item[1] else next((i for i, value in enumerate(item) if value is label), None)
