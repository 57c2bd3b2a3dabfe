"""Which class each probe is explained for."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

TargetSpec = str | int | Sequence[int] | Tensor
TARGET_MODES = ("label", "predicted")


def check_target(target: TargetSpec, num_classes: int | None = None, num_probes: int | None = None) -> None:
    """Validate ``target`` (and, when known, against the number of classes and probes).

    Example::

        >>> check_target(12, num_classes=10)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `target=12` is out of range for a model with 10 classes; ...
    """
    if isinstance(target, str):
        if target not in TARGET_MODES:
            raise ValueError(
                f"`target={target!r}` is not supported; use one of {list(TARGET_MODES)}, an int class, or one "
                "class per probe."
            )
        return
    if isinstance(target, bool):
        raise ValueError(f"`target={target!r}` must be 'label', 'predicted', an int or a sequence of ints.")
    single = isinstance(target, numbers.Integral) or (isinstance(target, Tensor) and target.ndim == 0)
    values = torch.as_tensor(target).reshape(-1)
    if values.is_floating_point():
        raise ValueError(f"`target` must hold integer classes, got {values.dtype}.")
    if single and int(values[0]) < 0:
        raise ValueError(f"`target={target}` must be a class index >= 0.")
    if num_classes is not None:
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.numel():
            shown = int(values[0]) if single else sorted(set(bad.tolist()))
            raise ValueError(
                f"`target={shown}` is out of range for a model with {num_classes} classes; use a class in "
                f"[0, {num_classes - 1}], 'label' or 'predicted'."
            )
    if num_probes is not None and not single and values.numel() != num_probes:
        raise ValueError(
            f"`target` has {values.numel()} entries but there are {num_probes} probes; give one class per probe "
            "or a single int."
        )


def resolve_targets(
    target: TargetSpec, labels: Tensor | None, predicted: Tensor, warn: Callable[[str, str], None]
) -> Tensor:
    """The ``(P,)`` int64 class per probe, on ``predicted``'s device.

    Example::

        >>> resolve_targets("label", None, torch.tensor([2, 0]), lambda key, msg: None).tolist()
        [2, 0]
    """
    if target == "predicted":
        return predicted.long()
    if target == "label":
        if labels is None:
            warn(
                "target_fallback",
                "AttributionMonitor: `target='label'` but the probes have no labels; explaining the predicted "
                "class instead (pass `probes=(images, labels)` or `target='predicted'` to silence this).",
            )
            return predicted.long()
        return labels.to(predicted.device).long()
    values = torch.as_tensor(target).reshape(-1).to(predicted.device).long()
    return values.expand(predicted.shape[0]).clone() if values.numel() == 1 else values


def shard_target(target: TargetSpec, part: slice) -> TargetSpec:
    """``target`` for the probes ``part`` (one class per probe is sliced; the other forms apply to any share).

    Example::

        >>> shard_target([3, 1, 2], slice(1, 3)).tolist(), shard_target("label", slice(0, 1))
        ([1, 2], 'label')
    """
    if isinstance(target, str):
        return target
    values = torch.as_tensor(target).reshape(-1)
    return values if values.numel() == 1 else values[part]
