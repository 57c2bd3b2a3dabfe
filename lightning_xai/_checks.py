"""The monitor's input layer: every argument is checked and normalised here, once, at construction.

Integer-like values (numpy integers, 0-d integer tensors, whole floats such as ``2.0``) become ints and real numbers
floats, by the one helper every layer uses (:func:`~lightning_xai.explain.base.check_int`,
:func:`~lightning_xai.explain.base.check_float`); numpy arrays and lists become tensors; anything else raises a
``ValueError`` that names the argument, the value and the fix, before any training step. What depends on the model
(shapes, classes, layers) is checked by the setup dry run (:func:`lightning_xai.explain.setup.dry_run`)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai.drift.alerts import DriftRule
from lightning_xai.explain.base import check_int, check_name
from lightning_xai.explain.registry import build_explainers, method_names
from lightning_xai.probes import check_target
from lightning_xai.probes.inputs import as_tensor, check_images, check_labels, describe
from lightning_xai.settings import Budget, Display, DriftPolicy, as_settings
from lightning_xai.visualize.render import black_input, check_denormalize


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
    constructor's ``locals()``) and return them normalised; ``drift``, ``display`` and ``budget`` become settings
    objects (their defaults for None). Methods are built (and checked) by the registry."""
    a = {k: v for k, v in arguments.items() if k not in ("self", "__class__")}
    a["name"] = check_monitor_name(a.get("name"))
    a["probes"] = check_probes(a["probes"])
    for key, low in (("num_probes", 1), ("every_n_epochs", 1), ("seed", 0)):
        a[key] = check_int(key, a[key], low)
    if a["forward_fn"] is not None and not callable(a["forward_fn"]):
        raise ValueError(f"`forward_fn` must be a callable forward_fn(pl_module, x), got {describe(a['forward_fn'])}.")
    a["methods"] = check_methods(a["methods"])
    a["target"] = check_target_argument(a["target"])
    a["denormalize"] = check_denormalize(a["denormalize"])
    for key, kind in (("drift", DriftPolicy), ("display", Display), ("budget", Budget)):
        a[key] = as_settings(kind, a[key], key)
    return a


def check_rule_methods(drift_rules: Sequence[DriftRule], names: Sequence[str]) -> None:
    """Every method a rule names must be one of the monitor's (after aliases), or the rule would never fire."""
    for rule in drift_rules:
        unknown = [m for m in rule.methods or () if m not in names]
        if unknown:
            raise ValueError(
                f"`DriftPolicy.rules` has DriftRule(methods={rule.methods!r}) but {unknown} is not among this "
                f"monitor's methods {list(names)}; use one of those names (aliases such as 'ig' are accepted)."
            )


def monitor_explainers(a: Mapping[str, Any]) -> list[Any]:
    """The explainers for normalised arguments ``a``: built by the registry from ``methods=`` (a method left at
    ``baseline=None`` gets the input that displays as black), with every rule's methods among them."""
    explainers = build_explainers(a["methods"], black_input(a["denormalize"]))
    if not explainers:
        raise ValueError(f"`methods` is empty; choose at least one of {method_names()}.")
    check_rule_methods(a["drift"].rules, [e.name for e in explainers])
    return explainers
