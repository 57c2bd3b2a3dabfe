"""The monitor's argument checks in one place: each raises a ``ValueError`` naming the argument, the value and the
fix, at construction, before any training step."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from lightning_xai.drift.alerts import DriftRule
from lightning_xai.drift.detector import ShiftDetector
from lightning_xai.probes import check_target
from lightning_xai.visualize.render import check_colormap, check_denormalize

ON_DRIFT_ACTIONS = ("warn", "stop", "raise")


def check_int(name: str, value: Any, low: int, allow_none: bool = False) -> None:
    """An int ``>= low`` (not a bool, not a string).

    Example::

        >>> check_int("warmup_epochs", "2", 0)
        Traceback (most recent call last):
        ...
        ValueError: `warmup_epochs` must be an int >= 0, got '2' (str).
    """
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        shown = f"{value!r} ({type(value).__name__})" if not isinstance(value, int) else repr(value)
        raise ValueError(f"`{name}` must be an int >= {low}{' or None' if allow_none else ''}, got {shown}.")


def check_fraction(name: str, value: Any, low_open: bool = True) -> None:
    """A real number in ``(0, 1]`` (or ``[0, 1]`` with ``low_open=False``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (0 < value <= 1 if low_open else 0 <= value <= 1)
    if not ok:
        bounds = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"`{name}` must be a number in {bounds}, got {value!r} ({type(value).__name__}).")


def check_monitor_arguments(arguments: Mapping[str, Any]) -> None:
    """Every check of :class:`~lightning_xai.AttributionMonitor`'s arguments that needs no model (``arguments``:
    its constructor's ``locals()``); methods are checked by the registry that builds them, and what depends on
    the model by the setup dry run (:func:`lightning_xai.explain.setup.dry_run`)."""
    a = dict(arguments)
    probes, max_seconds_per_epoch, on_drift, drift_rules = (
        a["probes"],
        a["max_seconds_per_epoch"],
        a["on_drift"],
        a["drift_rules"],
    )
    if max_seconds_per_epoch is not None and not (
        isinstance(max_seconds_per_epoch, (int, float))
        and not isinstance(max_seconds_per_epoch, bool)
        and max_seconds_per_epoch > 0
        and math.isfinite(max_seconds_per_epoch)
    ):
        raise ValueError(
            f"`max_seconds_per_epoch` must be > 0 (seconds) or None for no budget, got {max_seconds_per_epoch!r}."
        )
    check_int("num_probes", a["num_probes"], 1)
    check_int("every_n_epochs", a["every_n_epochs"], 1)
    check_int("warmup_epochs", a["warmup_epochs"], 0)
    check_int("reference_epoch", a["reference_epoch"], 0, allow_none=True)
    check_int("seed", a["seed"], 0)
    if not (callable(on_drift) or on_drift in ON_DRIFT_ACTIONS):
        raise ValueError(
            f"`on_drift={on_drift!r}` is not supported; use one of {list(ON_DRIFT_ACTIONS)} or a callable "
            "that receives a DriftAlert."
        )
    check_fraction("topk", a["topk"])
    check_fraction("probe_threshold", a["probe_threshold"], low_open=False)
    if isinstance(drift_rules, DriftRule) or not isinstance(drift_rules, Sequence) or isinstance(drift_rules, str):
        raise ValueError(f"`drift_rules` must be a sequence of DriftRule, e.g. (DriftRule(),), got {drift_rules!r}.")
    for rule in drift_rules:
        if not isinstance(rule, DriftRule):
            raise ValueError(f"`drift_rules` must hold DriftRule instances, got {type(rule).__name__}: {rule!r}.")
    if probes is not None and not isinstance(probes, (Tensor, tuple, Dataset)):
        raise ValueError(
            f"`probes` must be None, a Tensor (N, C, H, W), a tuple (images, labels) or a torch Dataset; "
            f"got {type(probes).__name__}."
        )
    if isinstance(probes, Tensor) and probes.ndim != 4:
        raise ValueError(
            f"`probes` must be a 4-D tensor (N, C, H, W), got shape {tuple(probes.shape)}. "
            "Add a batch dimension with `probes.unsqueeze(0)` for a single image."
        )
    for name in ("forward_fn", "output_transform"):
        fn = a[name]
        if fn is not None and not callable(fn):
            raise ValueError(f"`{name}` must be a callable, got {fn!r}.")
    check_target(a["target"])
    check_colormap(a["colormap"])
    check_denormalize(a["denormalize"])
    detector = a["detector"]
    if not (detector is None or detector == "default" or isinstance(detector, ShiftDetector)):
        raise ValueError(f"`detector` must be 'default', a ShiftDetector or None, got {detector!r}.")


def check_rule_methods(drift_rules: Sequence[DriftRule], names: Sequence[str]) -> None:
    """Every method a rule names must be one of the monitor's (after aliases), or the rule would never fire."""
    for rule in drift_rules:
        unknown = [m for m in rule.methods or () if m not in names]
        if unknown:
            raise ValueError(
                f"`drift_rules` has DriftRule(methods={rule.methods!r}) but {unknown} is not among this monitor's "
                f"methods {list(names)}; use one of those names (aliases such as 'ig' are accepted)."
            )
