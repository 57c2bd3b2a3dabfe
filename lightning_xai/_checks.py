"""The monitor's input layer: every argument that needs no model is checked and normalised here, once, at
construction (integer-likes to ints, arrays and lists to tensors); anything else raises a ``ValueError`` naming the
argument, the value and the fix. What depends on the model is checked by the setup dry run."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai.explain.base import check_int, check_name
from lightning_xai.explain.registry import build_explainers, method_names
from lightning_xai.probes import check_target
from lightning_xai.probes.inputs import as_tensor, check_images, check_labels, describe
from lightning_xai.settings import Budget, Display, DriftPolicy, as_settings
from lightning_xai.visualize.render import black_input, check_denormalize

#: the first part of an unnamed monitor's tags besides method names: a monitor's name must not be one of them
RESERVED_NAMES = ("summary", "localization", "sheet", "probes", "settings", "predictions", "alerts", "errors",
                  "seconds", "skipped", "setup_check")  # fmt: skip


def check_probes(probes: Any) -> Any:
    """None, a Dataset or DataLoader as they are; images (a tensor, array or list of ``(C, H, W)`` tensors) and
    ``(images, labels)`` pairs (labels may be None) checked and converted."""
    if probes is None or isinstance(probes, (Dataset, DataLoader)):
        return probes
    fix = "Pass a (N, C, H, W) tensor, an (images, labels) pair, a Dataset, or None to draw from the validation data."
    if isinstance(probes, tuple) or (isinstance(probes, list) and len(probes) == 2 and _is_images(probes[0])):
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


def _is_images(value: Any) -> bool:
    """A 4-D array, or a list of 3-D ones."""
    if isinstance(value, list):
        return bool(value) and getattr(value[0], "ndim", None) == 3
    return getattr(value, "ndim", None) == 4


def normalize_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise the arguments of :class:`~lightning_xai.AttributionMonitor` (its ``locals()``): the
    settings objects made (their defaults for None) and ``"explainers"`` built by the registry (a method left at
    ``baseline=None`` gets the input that displays as black), each rule's methods among them."""
    a = {k: v for k, v in arguments.items() if k not in ("self", "__class__")}
    name = check_name("name", a.get("name"), allow_none=True)
    if name is not None and (name in RESERVED_NAMES or name in method_names()):
        raise ValueError(
            f"`name={name!r}` would mix this monitor's tags (xai/{name}/...) with an unnamed monitor's; choose "
            f"another name, e.g. name='{name}_run'."
        )
    a["name"], a["probes"] = name, check_probes(a["probes"])
    for key, low in (("num_probes", 1), ("every_n_epochs", 1), ("seed", 0)):
        a[key] = check_int(key, a[key], low)
    if a["forward_fn"] is not None and not callable(a["forward_fn"]):
        raise ValueError(f"`forward_fn` must be a callable forward_fn(pl_module, x), got {describe(a['forward_fn'])}.")
    methods = a["methods"]
    if not isinstance(methods, str) and (not isinstance(methods, Sequence) or isinstance(methods, bytes)):
        raise ValueError(
            f"`methods` must be a sequence of names or Explainer instances, e.g. ('gradcam', 'integrated_gradients'), "
            f"got {describe(methods)}."
        )
    a["methods"] = (methods,) if isinstance(methods, str) else tuple(methods)
    a["target"] = _check_target(a["target"])
    a["denormalize"] = check_denormalize(a["denormalize"])
    for key, kind in (("drift", DriftPolicy), ("display", Display), ("budget", Budget)):
        a[key] = as_settings(kind, a[key], key)
    a["explainers"] = explainers = build_explainers(a["methods"], black_input(a["denormalize"]))
    if not explainers:
        raise ValueError(f"`methods` is empty; choose at least one of {method_names()}.")
    names = [e.name for e in explainers]
    for rule in a["drift"].rules:  # a rule naming none of the monitor's methods would never fire
        unknown = [m for m in rule.methods or () if m not in names]
        if unknown:
            raise ValueError(
                f"`DriftPolicy.rules` has DriftRule(methods={rule.methods!r}) but {unknown} is not among this "
                f"monitor's methods {names}; use one of those names (aliases such as 'ig' are accepted)."
            )
    return a


def _check_target(target: Any) -> Any:
    """``target`` with numpy values converted (ints, arrays); then checked without the model."""
    if isinstance(target, np.generic):
        target = target.item()
    elif isinstance(target, (np.ndarray, list, tuple)):
        target = as_tensor(target, "`target`", "Give one class index per probe, an int, 'label' or 'predicted'.")
    if isinstance(target, Tensor) and (target.device.type == "meta" or target.numel() == 0):
        raise ValueError(f"`target` must hold class indices, got {describe(target)}.")
    if not isinstance(target, (str, numbers.Integral, Tensor)):
        raise ValueError(
            f"`target` must be 'label', 'predicted', an int class or one class per probe, got {describe(target)}."
        )
    check_target(target)  # type: ignore[arg-type]  # an Integral is an int class
    return target
