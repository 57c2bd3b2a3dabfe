"""Which class each probe is explained for, and what the model predicts for it.

A model with one output column (a binary classifier trained with ``BCEWithLogitsLoss``) has two classes: its logit
is class 1's, so the prediction is class 1 where ``sigmoid(logit) > 0.5`` (else 0), with confidence
``max(p, 1 - p)``. The probes' classes (their ``target``: ``'label'``, ``'predicted'``, or 0/1) are 0 or 1, and every
method explains the one logit (:func:`output_index`): its attribution is evidence for class 1 and against class 0,
whichever class the probe is explained for.

A model whose forward ends in ``softmax`` returns probabilities, not logits: where every row is already a probability
vector (:func:`are_probabilities`), the rows are the probabilities as they are (a softmax of them would flatten a
0.94 into a 0.55); ``log_softmax`` outputs need nothing (their softmax is the probabilities). One column that
ends in ``sigmoid`` cannot be told from a logit: it is read as a logit, said once where every value is in [0, 1]
(:func:`one_column_note`)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

TargetSpec = str | int | Sequence[int] | Tensor
TARGET_MODES = ("label", "predicted")
#: how far a row may sum from 1 and still be read as probabilities (a float32 softmax is off by ~1e-7, a bfloat16 one
#: by a few 1e-3)
PROBABILITY_TOLERANCE = 1e-2


def classes_of(width: int) -> int:
    """How many classes a model with ``width`` output columns tells apart: a single logit is a binary classifier's.

    Example::

        >>> classes_of(1), classes_of(10)
        (2, 10)
    """
    return 2 if width == 1 else width


def predict(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(confidence, predicted class)`` per row of ``(N, C)`` logits: softmax over ``C >= 2`` classes; a single
    logit is class 1's (``sigmoid(logit) > 0.5``), its confidence ``max(p, 1 - p)``.

    Example::

        >>> confidence, predicted = predict(torch.tensor([[0.056], [-2.0]]))
        >>> predicted.tolist(), [round(c, 3) for c in confidence.tolist()]
        ([1, 0], [0.514, 0.881])
    """
    return probabilities(logits).max(dim=1)  # one logit: [1 - p, p], class 1 only where p > 0.5


def probabilities(logits: Tensor) -> Tensor:
    """``(N, classes)`` class probabilities of ``(N, C)`` logits: softmax; a single logit's ``[1 - p, p]``; outputs
    that are already probabilities (:func:`are_probabilities`: a forward that ends in softmax) as they are.

    Example::

        >>> probabilities(torch.tensor([[0.0]])).tolist()
        [[0.5, 0.5]]
        >>> probabilities(torch.tensor([[0.75, 0.25]])).tolist()
        [[0.75, 0.25]]
    """
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return logits if are_probabilities(logits) else torch.softmax(logits, dim=1)


def are_probabilities(outputs: Tensor) -> bool:
    """Whether ``(N, C >= 2)`` outputs are already class probabilities: every value in [0, 1] and every row summing to
    1 (within :data:`PROBABILITY_TOLERANCE`), as a forward that ends in softmax returns. Logits almost never are (all
    in [0, 1] and each row summing to 1, for every probe).

    Example::

        >>> are_probabilities(torch.tensor([[0.9, 0.1], [0.2, 0.8]])), are_probabilities(torch.tensor([[2.0, -1.0]]))
        (True, False)
    """
    if outputs.ndim != 2 or outputs.shape[1] < 2 or not outputs.numel():
        return False
    x = outputs.detach().float()
    return bool(((x >= 0) & (x <= 1)).all() and ((x.sum(dim=1) - 1).abs() <= PROBABILITY_TOLERANCE).all())


def one_column_in_unit_range(outputs: Tensor) -> bool:
    """Whether ``(N, 1)`` outputs of two probes or more are all in [0, 1]: read as logits, every probe is class 1; a
    forward that ends in sigmoid returns such outputs (the monitor cannot tell; :func:`one_column_note` says so).

    Example::

        >>> one_column_in_unit_range(torch.tensor([[0.9], [0.1]]))
        True
        >>> one_column_in_unit_range(torch.tensor([[2.0], [0.1]]))
        False
    """
    if outputs.ndim != 2 or outputs.shape[1] != 1 or outputs.shape[0] < 2:
        return False
    x = outputs.detach().float()
    return bool(((x >= 0) & (x <= 1)).all())


def one_column_note(model: str) -> str:
    """What the monitor says, once, when ``model``'s one column is in [0, 1] on every probe."""
    return (
        f"AttributionMonitor: {model} returns one column and every value on the probes is in [0, 1]; it is read as a "
        "logit (class 1 where sigmoid(logit) > 0.5), so every probe is predicted class 1. If its forward ends in "
        "sigmoid (the column is class 1's probability), the predictions and confidences are wrong (a sigmoid of a "
        "probability is between 0.5 and 0.73): return the logit (and train with `BCEWithLogitsLoss`), or pass "
        "`forward_fn=lambda module, x: torch.logit(module(x), eps=1e-6)`."
    )


def probabilities_note(model: str) -> str:
    """What the monitor says, once, when ``model``'s outputs are already probabilities (:func:`are_probabilities`)."""
    return (
        f"AttributionMonitor: {model}'s outputs on the probes are already probabilities (every value in [0, 1], each "
        "row summing to 1: a forward that ends in softmax), so the confidences (sheet, predictions table, quality "
        "curves) are these values as they are, not a softmax of them. The maps explain the probabilities, whose "
        "gradients vanish where the softmax saturates (a confident probe's map can be empty): to explain the logits "
        "instead, pass `forward_fn=` returning the outputs before the softmax (or `log_softmax` of them)."
    )


def output_index(targets: Tensor, logits: Tensor) -> Tensor:
    """The output column each probe's explanation attributes: its class, or for a single logit that logit (0).

    Example::

        >>> output_index(torch.tensor([1, 0]), torch.zeros(2, 1)).tolist()
        [0, 0]
    """
    return torch.zeros_like(targets) if logits.shape[1] == 1 else targets


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
