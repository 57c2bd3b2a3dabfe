"""The monitor's input layer: every argument is checked and normalised here, once, at construction.

Integer-like values (numpy integers, 0-d integer tensors, whole floats such as ``2.0``) become ints and real numbers
floats, by the one helper every layer uses (:func:`~lightning_xai.explain.base.check_int`,
:func:`~lightning_xai.explain.base.check_float`); numpy arrays and lists become tensors; anything else raises a
``ValueError`` that names the argument, the value and the fix, before any training step. What depends on the model
(shapes, classes, layers) is checked by the setup dry run (:func:`lightning_xai.explain.setup.dry_run`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_xai.drift.alerts import DriftRule
from lightning_xai.drift.detector import ShiftDetector
from lightning_xai.explain.base import check_float, check_int, check_name
from lightning_xai.explain.registry import MethodOptions, build_explainers, method_names
from lightning_xai.probes import check_target
from lightning_xai.probes.inputs import as_tensor, check_images, check_labels, describe
from lightning_xai.visualize.render import black_input, check_colormap, check_denormalize

ON_DRIFT_ACTIONS = ("warn", "stop", "raise")

#: integer arguments and their smallest value (``tile_size``: the sheet needs 16 px per tile); ``allow_none`` ones apart
INT_ARGUMENTS = {"num_probes": 1, "every_n_epochs": 1, "warmup_epochs": 0, "seed": 0, "tile_size": 16}


def check_bool(name: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"`{name}` must be True or False, got {describe(value)}.")


def check_probes(probes: Any) -> Any:
    """None, a Dataset or DataLoader as they are; images (a tensor, numpy array or list of ``(C, H, W)`` tensors)
    and ``(images, labels)`` pairs (labels may be None) checked and converted (see
    :func:`lightning_xai.probes.inputs.check_images`)."""
    if probes is None or isinstance(probes, (Dataset, DataLoader)):
        return probes
    fix = "Pass a (N, C, H, W) tensor, an (images, labels) pair, a Dataset, or None to draw from the validation data."
    pair = isinstance(probes, tuple) or (isinstance(probes, list) and len(probes) == 2 and _is_4d(probes[0]))
    if pair:
        if len(probes) != 2:
            raise ValueError(f"`probes` as a tuple must be (images, labels), got {len(probes)} items. {fix}")
        images = check_images(as_tensor(probes[0], "`probes` images", fix))
        labels = check_labels(probes[1], len(images))
        return images if labels is None else (images, labels)
    if isinstance(probes, (Tensor, np.ndarray, list)):
        return check_images(as_tensor(probes, "`probes`", fix))
    raise ValueError(
        f"`probes` must be None, a Tensor (N, C, H, W), a tuple (images, labels), a Dataset or a DataLoader; "
        f"got {describe(probes)}. {fix}"
    )


def _is_4d(value: Any) -> bool:
    return getattr(value, "ndim", None) == 4 or (isinstance(value, list) and bool(value) and _is_3d(value[0]))


def _is_3d(value: Any) -> bool:
    return getattr(value, "ndim", None) == 3


def check_baseline(baseline: Any) -> float | Tensor | None:
    """IG's baseline: None, a finite number, or finite values broadcastable to one probe; a 1-D sequence holds one
    value per channel (the natural ``-mean / std``) and becomes ``(C, 1, 1)``.

    Example::

        >>> tuple(check_baseline(-np.array([0.5, 0.4, 0.3]) / np.array([0.2, 0.2, 0.2])).shape)
        (3, 1, 1)
    """
    fix = "Pass None (the input that displays as black), a float, or one value per channel such as `-mean / std`."
    if baseline is None:
        return None
    if isinstance(baseline, (str, bytes, bool, np.bool_)):
        raise ValueError(f"`ig_baseline` must be numbers, got {describe(baseline)}. {fix}")
    if isinstance(baseline, numbers.Real):
        value = float(baseline)
        if not math.isfinite(value):
            raise ValueError(f"`ig_baseline` must be finite, got {value}. {fix}")
        return value
    t = as_tensor(baseline, "`ig_baseline`", fix)
    if t.device.type == "meta" or t.is_complex() or t.numel() == 0 or t.ndim > 4:
        raise ValueError(f"`ig_baseline` must be real values broadcastable to one probe, got {describe(baseline)}.")
    t = t.detach().to("cpu", torch.float32, copy=True)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"`ig_baseline` contains NaN or Inf ({describe(baseline)}). {fix}")
    if t.ndim == 0:
        return float(t)
    return t.reshape(-1, 1, 1) if t.ndim == 1 else t


def check_methods(methods: Any) -> Sequence[Any]:
    if isinstance(methods, str):
        return (methods,)
    if not isinstance(methods, Sequence) or isinstance(methods, bytes):
        raise ValueError(
            f"`methods` must be a sequence of names or Explainer instances, e.g. ('gradcam', 'integrated_gradients'), "
            f"got {describe(methods)}."
        )
    return tuple(methods)


def check_target_argument(target: Any) -> Any:
    """``target`` with numpy values converted (ints, arrays); then checked without the model."""
    if isinstance(target, np.generic):
        target = target.item()
    elif isinstance(target, (np.ndarray, list, tuple)) and not isinstance(target, str):
        target = as_tensor(target, "`target`", "Give one class index per probe, an int, 'label' or 'predicted'.")
    if isinstance(target, Tensor) and (target.device.type == "meta" or target.numel() == 0):
        raise ValueError(f"`target` must hold class indices, got {describe(target)}.")
    if not isinstance(target, (str, numbers.Integral, Tensor)):
        raise ValueError(
            f"`target` must be 'label', 'predicted', an int class or one class per probe, got {describe(target)}."
        )
    check_target(target)  # type: ignore[arg-type]  # an Integral is an int class
    return target


#: the first part of an unnamed monitor's tags besides method names: a monitor's name must not be one of them
RESERVED_NAMES = ("summary", "localization", "sheet", "probes", "settings", "predictions", "alerts", "errors",
                  "seconds", "skipped", "setup_check")  # fmt: skip


def check_monitor_name(name: Any) -> str | None:
    """``name=``: :func:`check_name`, and not a word an unnamed monitor's tags start with (``xai/<name>/...`` would
    mix with ``xai/gradcam/...`` or ``xai/summary/...``).

    Example::

        >>> check_monitor_name("gradcam")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `name='gradcam'` would mix this monitor's tags (xai/gradcam/...) with an unnamed monitor's; ...
    """
    checked = check_name("name", name, allow_none=True)
    if checked is not None and (checked in RESERVED_NAMES or checked in method_names()):
        raise ValueError(
            f"`name={checked!r}` would mix this monitor's tags (xai/{checked}/...) with an unnamed monitor's; choose "
            f"another name, e.g. name='{checked}_run'."
        )
    return checked


def normalize_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Check every argument of :class:`~lightning_xai.AttributionMonitor` that needs no model (``arguments``: its
    constructor's ``locals()``) and return them normalised. Methods are built (and checked) by the registry."""
    a = {k: v for k, v in arguments.items() if k not in ("self", "__class__")}
    a["name"] = check_monitor_name(a.get("name"))
    a["probes"] = check_probes(a["probes"])
    for key, low in INT_ARGUMENTS.items():
        a[key] = check_int(key, a[key], low)
    a["reference_epoch"] = check_int("reference_epoch", a["reference_epoch"], 0, allow_none=True)
    a["ig_internal_batch_size"] = check_int("ig_internal_batch_size", a["ig_internal_batch_size"], 1, allow_none=True)
    steps = a["ig_steps"]
    if not (isinstance(steps, str) and steps == "auto"):
        if isinstance(steps, str):
            raise ValueError(
                f"`ig_steps` must be an int >= 1 or 'auto', got {steps!r}; pass ig_steps='auto' or e.g. 32."
            )
        a["ig_steps"] = check_int("ig_steps", steps, 1)
    for key in ("max_seconds_per_epoch", "max_overhead"):
        a[key] = check_float(key, a[key], 0.0, low_open=True, allow_none=True)
    a["topk"] = check_float("topk", a["topk"], 0.0, 1.0, low_open=True)
    a["probe_threshold"] = check_float("probe_threshold", a["probe_threshold"], 0.0, 1.0)
    on_drift = a["on_drift"]
    if not (callable(on_drift) or (isinstance(on_drift, str) and on_drift in ON_DRIFT_ACTIONS)):
        raise ValueError(
            f"`on_drift={on_drift!r}` is not supported; use one of {list(ON_DRIFT_ACTIONS)} or a callable "
            "that receives a DriftAlert."
        )
    drift_rules = a["drift_rules"]
    if isinstance(drift_rules, DriftRule) or not isinstance(drift_rules, Sequence) or isinstance(drift_rules, str):
        raise ValueError(f"`drift_rules` must be a sequence of DriftRule, e.g. (DriftRule(),), got {drift_rules!r}.")
    for rule in drift_rules:
        if not isinstance(rule, DriftRule):
            raise ValueError(f"`drift_rules` must hold DriftRule instances, got {type(rule).__name__}: {rule!r}.")
    a["drift_rules"] = tuple(drift_rules)
    for key in ("forward_fn", "output_transform"):
        if a[key] is not None and not callable(a[key]):
            raise ValueError(f"`{key}` must be a callable, got {describe(a[key])}.")
    masks = a["probe_masks"]
    if masks is not None and not callable(masks):
        a["probe_masks"] = as_tensor(masks, "`probe_masks`", "Pass one boolean (H, W) mask per probe (N, H, W).")
    layer = a["gradcam_layer"]
    if layer is not None and not isinstance(layer, (str, nn.Module)):
        raise ValueError(f"`gradcam_layer` must be a dotted module name, a module or None, got {describe(layer)}.")
    a["methods"] = check_methods(a["methods"])
    a["target"] = check_target_argument(a["target"])
    a["colormap"] = check_colormap(a["colormap"])
    a["denormalize"] = check_denormalize(a["denormalize"])
    a["ig_baseline"] = check_baseline(a["ig_baseline"])
    for key in ("log_heatmaps", "log_grids", "background_logging"):
        a[key] = check_bool(key, a[key])
    detector = a["detector"]
    if not (
        detector is None or isinstance(detector, ShiftDetector) or (isinstance(detector, str) and detector == "default")
    ):
        raise ValueError(f"`detector` must be 'default', a ShiftDetector or None, got {describe(detector)}.")
    return a


def check_rule_methods(drift_rules: Sequence[DriftRule], names: Sequence[str]) -> None:
    """Every method a rule names must be one of the monitor's (after aliases), or the rule would never fire."""
    for rule in drift_rules:
        unknown = [m for m in rule.methods or () if m not in names]
        if unknown:
            raise ValueError(
                f"`drift_rules` has DriftRule(methods={rule.methods!r}) but {unknown} is not among this monitor's "
                f"methods {list(names)}; use one of those names (aliases such as 'ig' are accepted)."
            )


def monitor_explainers(a: Mapping[str, Any]) -> list[Any]:
    """The explainers for normalised arguments ``a``: built by the registry from ``methods=`` and the method
    arguments (IG's baseline defaults to the input that displays as black), with every rule's methods among them."""
    baseline = a["ig_baseline"]
    if baseline is None:  # the input that displays as black, when `denormalize` says which it is
        baseline = black_input(a["denormalize"])
    options = MethodOptions(
        a["gradcam_layer"], a["gradcam_reshape"], a["ig_steps"], baseline, a["ig_internal_batch_size"]
    )
    explainers = build_explainers(a["methods"], options)
    if not explainers:
        raise ValueError(f"`methods` is empty; choose at least one of {method_names()}.")
    check_rule_methods(a["drift_rules"], [e.name for e in explainers])
    return explainers
