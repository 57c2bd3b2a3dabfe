"""The interface every attribution method implements (:class:`Explainer` -> :class:`Explanation`), and the
argument checks every layer shares (:func:`check_int`, :func:`check_float`, :func:`check_name`,
:func:`check_baseline_shape`)."""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import Tensor, nn

from lightning_xai.probes.inputs import as_tensor, describe

ForwardFn = Callable[[Tensor], Tensor]

#: keywords the monitor can hand ``explain`` when listed in :attr:`Explainer.explain_keywords`: ``outputs`` (the shared
#: prediction pass), ``max_seconds`` (the time left: the method scales its work down and adds ``budget_limited`` to its
#: diagnostics) and the monitor's limits ``max_steps``, ``max_batch``, ``search_seconds`` (IntegratedGradients.explain)
EXPLAIN_KEYWORDS = frozenset({"outputs", "max_seconds", "max_steps", "max_batch", "search_seconds"})


@dataclass
class Explanation:
    """One method's result for all probes.

    Attributes:
        raw: ``(P, h, w)`` float32 attribution map drift is measured on (signs kept; drift uses ``|raw|``).
        display: ``(P, H, W)`` float32, non-negative, at the input's resolution: what is drawn and localised.
        diagnostics: per-probe ``(P,)`` tensors, e.g. ``{"completeness_gap": ...}``."""

    raw: Tensor
    display: Tensor
    diagnostics: dict[str, Tensor] = field(default_factory=dict)


class Explainer(ABC):
    """Interface of an attribution method used by :class:`~lightning_xai.AttributionMonitor`."""

    #: name used in TensorBoard tags (``xai/<name>/...``) and in ``methods=``
    name: str = ""
    #: forward(+backward) passes per probe, for the cost model and budgets
    passes_per_probe: float = 1.0
    #: how ``display`` maps are scaled to [0, 1] per image: "max" or "percentile" (robust to a few hot pixels)
    display_normalization: str = "max"
    #: optional keywords ``explain`` accepts, from :data:`EXPLAIN_KEYWORDS`; the monitor passes exactly these
    explain_keywords: frozenset[str] = frozenset()

    def config(self) -> dict[str, Any]:
        """The settings that change this method's maps, as short primitives: a checkpoint's reference maps are
        restored only into a monitor whose methods describe themselves the same way."""
        return {}

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:  # noqa: B027
        """Validate against the model before training starts (``example`` is one probe, batch of 1)."""

    @abstractmethod
    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        """Attribute ``forward(inputs)[i, targets[i]]`` for every probe ``i``; a method may also accept the keywords
        listed in its ``explain_keywords`` (see :data:`EXPLAIN_KEYWORDS`)."""

    def __getstate__(self) -> dict[str, Any]:
        """The picklable state: the model's modules bound at setup (``_model``, ``_module``) are left out."""
        return {k: None if k in ("_model", "_module") else v for k, v in self.__dict__.items()}


# argument checks: here, at the bottom of the explain layer, so that explain, drift and visualize can import them

#: a name that becomes part of tags, keys and log directories (no ``/``, ``.``, spaces: ``..`` would climb out)
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
NAME_RULE = "1 to 64 ASCII letters, digits, '_' or '-' (not starting with '-')"


def _scalar(value: Any) -> Any:
    """A single number as a Python value: numpy scalars and 0-d arrays/tensors unwrapped, anything else as is."""
    if isinstance(value, (Tensor, np.ndarray, np.generic)) and value.ndim == 0:
        with contextlib.suppress(RuntimeError, ValueError):  # the meta device: no value
            return value.item()
    return value


def _refusal(name: str, where: str, expected: str, value: Any, fix: str) -> ValueError:
    shown = repr(value) if type(value) in (int, float) else describe(value)
    return ValueError(f"`{f'{where}({name}=...)' if where else name}` must be {expected}, got {shown}; {fix}.")


@overload
def check_int(
    name: str,
    value: Any,
    minimum: int = ...,
    maximum: int | None = ...,
    *,
    allow_none: Literal[False] = ...,
    where: str = ...,
) -> int: ...
@overload
def check_int(
    name: str, value: Any, minimum: int = ..., maximum: int | None = ..., *, allow_none: Literal[True], where: str = ...
) -> int | None: ...
def check_int(
    name: str, value: Any, minimum: int = 0, maximum: int | None = None, *, allow_none: bool = False, where: str = ""
) -> int | None:
    """``value`` as a plain ``int`` in ``[minimum, maximum]``, or a ``ValueError`` naming the argument, the value
    and the fix. Accepted: ints, numpy integers, 0-d integer arrays/tensors and whole floats; refused: bools,
    fractions, strings, sequences, ``None`` unless ``allow_none``. ``where="ShiftDetector"`` names the owner."""
    if allow_none and value is None:
        return None
    number = _scalar(value)
    result: int | None = None
    fix = _type_fix(name, value, minimum, integer=True)
    if isinstance(number, bool):
        pass
    elif isinstance(number, numbers.Integral):
        result = int(number)
    elif isinstance(number, numbers.Real):
        real = float(number)
        if math.isfinite(real) and real.is_integer():
            result = int(real)
        elif math.isfinite(real):
            fix = _whole_fix(name, real, minimum, maximum)
        else:
            fix = f"pass a finite whole number, e.g. {name}={minimum}"
    elif not isinstance(number, (Tensor, np.ndarray, complex)):
        with contextlib.suppress(TypeError):  # another type that says it is an integer (not a string)
            result = operator.index(number)
    if result is not None and result >= minimum and (maximum is None or result <= maximum):
        return result
    if result is not None:
        fix = f"pass {name}={minimum if result < minimum else maximum}" + (" or more" if maximum is None else "")
    expected = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
    expected += " or None" if allow_none else ""
    raise _refusal(name, where, expected, value, fix)


def check_bool(name: str, value: Any, where: str = "") -> bool:
    """``value`` as a plain ``bool`` (``True``/``False``, numpy's, a 0-d boolean array or tensor), or a ``ValueError``
    naming the argument and the value: a string such as ``"no"`` is not read as a truth value."""
    flag = _scalar(value)
    if isinstance(flag, (bool, np.bool_)):
        return bool(flag)
    raise _refusal(name, where, "True or False", value, f"pass {name}=True or {name}=False")


@overload
def check_float(
    name: str,
    value: Any,
    minimum: float = ...,
    maximum: float = ...,
    *,
    low_open: bool = ...,
    high_open: bool = ...,
    allow_none: Literal[False] = ...,
    where: str = ...,
) -> float: ...
@overload
def check_float(
    name: str,
    value: Any,
    minimum: float = ...,
    maximum: float = ...,
    *,
    low_open: bool = ...,
    high_open: bool = ...,
    allow_none: Literal[True],
    where: str = ...,
) -> float | None: ...
def check_float(
    name: str,
    value: Any,
    minimum: float = -math.inf,
    maximum: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    where: str = "",
) -> float | None:
    """``value`` as a finite ``float`` in ``[minimum, maximum]`` (an end excluded with ``low_open``/``high_open``),
    or a ``ValueError`` naming the argument, the value and the fix (as :func:`check_int`, for reals)."""
    if allow_none and value is None:
        return None
    number = _scalar(value)
    real = float(number) if isinstance(number, numbers.Real) and not isinstance(number, bool) else None
    if real is not None and math.isfinite(real):
        above = real > minimum if low_open else real >= minimum
        if above and (real < maximum if high_open else real <= maximum):
            return real
    if math.isfinite(minimum) and math.isfinite(maximum):
        bounds = f"a number in {'(' if low_open else '['}{minimum:g}, {maximum:g}{')' if high_open else ']'}"
    elif math.isfinite(minimum):
        bounds = f"a number > {minimum:g}" if low_open else f"a number >= {minimum:g}"
    elif math.isfinite(maximum):
        bounds = f"a number < {maximum:g}" if high_open else f"a number <= {maximum:g}"
    else:
        bounds = "a finite number"
    bounds += " or None" if allow_none else ""
    example = _inside(minimum, maximum, low_open, high_open)
    fix = _type_fix(name, value, example, integer=False)
    if real is not None:
        nearest = minimum if real <= minimum else maximum
        closed = not (low_open if nearest == minimum else high_open)
        fix = f"pass e.g. {name}={nearest:g}" if math.isfinite(nearest) and closed else f"pass {bounds}"
        fix = fix if math.isfinite(real) else f"pass a finite number, e.g. {name}={example:g}"
    raise _refusal(name, where, bounds, value, fix)


def check_baseline(baseline: Any, where: str) -> float | Tensor | None:
    """A method's reference input, checked when the method is made: None, a finite number, or finite values
    broadcastable to one probe (a 1-D sequence holds one value per channel, the natural ``-mean / std``, and becomes
    ``(C, 1, 1)``; a 4-D tensor is a batch of references)."""
    fix = "pass None (the input that displays as black), a float, or one value per channel such as `-mean / std`"
    if baseline is None:
        return None
    shown, number = describe(baseline), _scalar(baseline)
    if isinstance(number, numbers.Real) and not isinstance(number, (bool, np.bool_)):
        if not math.isfinite(float(number)):
            raise ValueError(f"`{where}(baseline=...)` must be finite, got {shown}; {fix}.")
        return float(number)
    t = as_tensor(baseline, f"`{where}(baseline=...)`", f"P{fix[1:]}.")  # lists and arrays; refuses strings
    if t.device.type == "meta" or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"`{where}(baseline=...)` must be numbers, got {shown}; {fix}.")
    if t.numel() == 0 or t.ndim > 4 or not bool(torch.isfinite(t.float()).all()):
        raise ValueError(
            f"`{where}(baseline=...)` must be finite values broadcastable to one probe, got {shown}; {fix}."
        )
    t = t.detach().to("cpu", torch.float32, copy=True)
    return float(t) if t.ndim == 0 else t.reshape(-1, 1, 1) if t.ndim == 1 else t


def _inside(minimum: float, maximum: float, low_open: bool, high_open: bool) -> float:
    """A value inside the bounds, for the example in a message."""
    if math.isfinite(minimum) and not low_open:
        return minimum
    if math.isfinite(maximum) and not high_open:
        return maximum
    if math.isfinite(minimum) and math.isfinite(maximum):
        return (minimum + maximum) / 2
    return minimum + 1 if math.isfinite(minimum) else (maximum - 1 if math.isfinite(maximum) else 0.0)


def _whole_fix(name: str, real: float, minimum: float, maximum: float | None) -> str:
    """``"pass a whole number: n=2 or n=3"`` for a fraction (the whole numbers around it, within the bounds)."""
    top = math.inf if maximum is None else maximum
    options = sorted({int(min(max(minimum, math.floor(real)), top)), int(min(max(minimum, math.ceil(real)), top))})
    return "pass a whole number: " + " or ".join(f"{name}={option}" for option in options)


def _type_fix(name: str, value: Any, example: float, integer: bool) -> str:
    """The fix for a value of the wrong kind: a string that holds a number, a bool, a sequence, anything else."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return f"pass a number, not a string, e.g. {name}={example:g}"
        if not math.isfinite(number):
            return f"pass a finite number, e.g. {name}={example:g}"
        if integer and not number.is_integer():
            return _whole_fix(name, number, example, math.inf)
        shown = int(number) if number.is_integer() and (integer or "." not in value) else number
        return f"pass {name}={shown}"
    if isinstance(_scalar(value), bool):
        return f"pass a number, not a bool, e.g. {name}={example:g}"
    if getattr(value, "ndim", 0) or isinstance(value, (list, tuple)):
        return f"pass a single number (e.g. `.item()` of a one-element tensor), such as {name}={example:g}"
    return f"pass a number, e.g. {name}={example:g}"


def check_name(argument: str, name: Any, allow_none: bool = False) -> str | None:
    """A name that becomes part of tags, keys and log directories: :data:`NAME_RULE`, else a ``ValueError``."""
    if name is None and allow_none:
        return None
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name):
        return name
    none = "None or " if allow_none else ""
    fix = f"Use e.g. {suggest_name(name, fallback='a')!r}."
    raise ValueError(
        f"`{argument}` must be {none}{NAME_RULE}: it becomes part of tags, keys and log directories "
        f"(xai/<name>/...); got {describe(name)}. {fix}"
    )


def suggest_name(name: Any, fallback: str = "method") -> str:
    """A name that follows :data:`NAME_RULE`, made from ``name`` (``fallback`` when nothing is left)."""
    fixed = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_-")[:64]
    return fixed or fallback


def check_baseline_shape(
    name: str, baseline: float | Tensor | None, probe_shape: tuple[int, ...], num_probes: int | None = None
) -> None:
    """The one baseline-shape check: a reference input fits probes ``(C, H, W)`` when it broadcasts to one probe
    ``(1, C, H, W)``, or (with ``num_probes``: one reference per probe) is 4-D with ``num_probes`` rows that
    broadcast to the probes. Else a ``ValueError`` naming ``name``, both shapes and the fix."""
    if not isinstance(baseline, Tensor):
        return
    shape, one = tuple(baseline.shape), (1, *probe_shape)
    try:
        joint = torch.broadcast_shapes(shape, one)
    except RuntimeError:
        joint = None
    per_probe = num_probes is not None and len(shape) == 4 and shape[0] == num_probes
    if joint == one or (per_probe and joint == (num_probes, *probe_shape)):
        return
    rows = f"one image per probe ({num_probes}, C, H, W), " if num_probes is not None else ""
    raise ValueError(
        f"`{name}` has shape {shape}, which does not fit probes of shape {tuple(probe_shape)} (C, H, W); pass one "
        f"value per channel (C, 1, 1) such as `-mean / std`, one image (C, H, W), {rows}a float, or None."
    )
