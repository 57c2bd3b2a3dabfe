"""Probe images and labels checked in one place: float32 CPU ``(N, C, H, W)`` images and ``(N,)`` int64 classes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def describe(value: Any) -> str:
    """A short description of a value for error messages (shape and dtype for arrays)."""
    if isinstance(value, Tensor | np.ndarray):
        kind = "tensor" if isinstance(value, Tensor) else "numpy array"
        return f"a {kind} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return f"{text[:80]}{'...' if len(text) > 80 else ''} ({type(value).__name__})"


def as_tensor(value: Any, what: str, fix: str) -> Tensor:
    """``value`` as a tensor (arrays, numbers and nested lists converted); ``what`` names the argument in errors."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Tensor) for v in value):
        try:
            return torch.stack([v.detach() for v in value])
        except RuntimeError as err:
            raise ValueError(f"{what}: cannot stack {len(value)} tensors ({err}). {fix}") from None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: cannot read numbers from {describe(value)} ({err}). {fix}") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numbers, got {describe(value)}. {fix}")
    return torch.from_numpy(np.ascontiguousarray(array))


def check_images(images: Tensor, argument: str = "probes", source: str = "") -> Tensor:
    """A float32 CPU copy of ``(N, C, H, W)`` finite float images, or a ``ValueError`` naming ``argument``."""
    where = f"`{argument}`" + (f" ({source})" if source else "")
    if not isinstance(images, Tensor):
        raise ValueError(f"{where} must be a tensor of images (N, C, H, W), got {describe(images)}.")
    shape, message = tuple(images.shape), ""
    if images.device.type == "meta":
        message = "are on the meta device, so they hold no values to explain; pass real tensors (e.g. on the CPU)."
    elif images.ndim != 4:
        message = f"must be a 4-D tensor (N, C, H, W), got shape {shape}. " + (
            "Add a batch dimension with `probes.unsqueeze(0)` for a single image." if images.ndim == 3 else ""
        )
    elif shape[0] == 0:
        message = f"holds no images (shape {shape}); pass at least one probe, or `probes=None` to draw from the data."
    elif 0 in shape[1:]:
        message = f"have an empty dimension: shape {shape} (N, C, H, W)."
    elif images.is_complex():
        message = f"are complex ({images.dtype}); pass real float images."
    elif not images.is_floating_point():
        message = (
            f"are integer images ({images.dtype}); the model sees them converted (e.g. `images.float() / 255`, then "
            "normalised), and the monitor cannot guess how. Pass them converted as your validation transform does, "
            "e.g. `probes=images.float() / 255`."
        )
    if message:
        raise ValueError(f"{where} {message}")
    out = images.detach().to("cpu", torch.float32, copy=True)
    bad = torch.nonzero(~torch.isfinite(out).flatten(1).all(dim=1)).flatten().tolist()
    if bad:
        raise ValueError(
            f"{where} contain NaN or Inf values (probes {bad[:5]}); every method would fail on them. "
            "Pass finite images."
        )
    return out


def one_class(label: Any) -> tuple[Tensor | None, str]:
    """One probe's label (an int, integral float or one-hot vector) as a 0-d int64 class, or ``(None, why not)``."""
    if label is None:
        return None, "no label"
    try:
        t = label if isinstance(label, Tensor) else torch.as_tensor(np.asarray(label))
    except (TypeError, ValueError, RuntimeError):
        return None, f"labels of type {type(label).__name__}"
    t = t.detach().cpu()
    if t.is_complex():
        return None, f"{t.dtype} labels"
    t = t.long() if t.dtype == torch.bool else t
    if t.numel() == 1:
        value = float(t)
        if not (np.isfinite(value) and value == int(value)):
            return None, f"a fractional label {value:g}, not a class index"
        return torch.tensor(int(value)), ""
    if t.ndim == 1 and t.numel() > 1:
        nonzero = int((t != 0).sum())
        if nonzero == 1 and float(t.max()) == 1.0:
            return t.argmax().reshape(()), ""
        return None, f"multi-hot or soft labels (a vector with {nonzero} non-zero entries), not one class"
    return None, f"labels of shape {tuple(t.shape)}, not one class each"


def check_labels(labels: Any, count: int, argument: str = "probes") -> Tensor | None:
    """``(count,)`` int64 classes from integer labels, integral floats or one-hot rows; None stays None."""
    if labels is None:
        return None
    fix = (
        f"Pass one class index per image (a (N,) integer tensor, list or array), or `{argument}=images` with "
        "`target='predicted'`."
    )
    t = as_tensor(labels, f"`{argument}` labels", fix)
    if t.device.type == "meta":
        raise ValueError(f"`{argument}` labels are on the meta device, so they hold no values. {fix}")
    t = torch.atleast_1d(t.detach().cpu())
    t = t[:, 0] if t.ndim == 2 and t.shape[1] == 1 else t
    if t.ndim == 2 and t.shape[0] == count:
        classes, bad = stack_labels(list(t))
        if classes is None:
            raise ValueError(f"`{argument}` labels of shape {tuple(t.shape)} are {bad}. {fix}")
        return classes
    if t.ndim != 1:
        raise ValueError(f"`{argument}` labels have shape {tuple(t.shape)} for {count} images. {fix}")
    if t.numel() != count:
        raise ValueError(
            f"`probes=(images, labels)` has {count} images but {t.numel()} labels; pass one integer label per image."
        )
    if t.is_floating_point() and not bool((torch.isfinite(t) & (t == t.round())).all()):
        raise ValueError(f"`{argument}` labels {describe(labels)} are fractional, not class indices. {fix}")
    return t.long()


def stack_labels(labels: Sequence[Any]) -> tuple[Tensor | None, str]:
    """The ``(N,)`` int64 classes of ``labels``, or ``(None, why)`` for the first that is not one class."""
    classes = [one_class(label) for label in labels]
    why = next((w for c, w in classes if c is None), "")
    return (None, why) if why else (torch.stack([c for c, _ in classes if c is not None]).long(), "")
