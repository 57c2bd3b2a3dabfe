"""The monitor's arguments, each checked once, when it is made: the grouped settings (:class:`DriftPolicy`,
:class:`Display`, :class:`Budget`) and every other argument that needs no model (integer-likes to ints, arrays and
lists to tensors); a ``ValueError`` names the argument, the value and the fix. The model is checked at setup."""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai._warn import warn
from lightning_xai.drift.alerts import DriftRule, OnDrift
from lightning_xai.drift.detector import ShiftDetector
from lightning_xai.explain.base import check_bool, check_float, check_int, check_name
from lightning_xai.explain.quality import check_quality
from lightning_xai.explain.registry import build_explainers, method_names
from lightning_xai.probes import check_target
from lightning_xai.probes.inputs import as_tensor, check_images, check_labels, describe
from lightning_xai.visualize.log import resolved_method_settings
from lightning_xai.visualize.render import black_input, check_colormap, check_denormalize

ON_DRIFT_ACTIONS = ("warn", "stop", "raise")
#: the first part of an unnamed monitor's tags besides method names: a monitor's name must not be one of them
RESERVED_NAMES = ("summary", "localization", "sheet", "probes", "settings", "predictions", "alerts", "errors",
                  "seconds", "skipped", "setup_check")  # fmt: skip


def _set(settings: Any, name: str, value: Any) -> None:
    object.__setattr__(settings, name, value)


@dataclass(frozen=True, eq=False)
class DriftPolicy:
    """What counts as drift, and what to do about it.

    Args:
        warmup_epochs: epochs the detector and rules ignore; the reference is the first evaluated epoch after them.
        reference_epoch: pin the reference to this epoch (or the first evaluated one after it that has the map).
        detector: a :class:`~lightning_xai.ShiftDetector` calibrated on this run's own movements, alerting when
            relevance moves into regions all probes ignored (``"default"``: ``ShiftDetector()``; None: only
            ``rules``).
        rules: fixed-threshold :class:`~lightning_xai.DriftRule` s checked in addition to the detector.
        on_drift: ``"warn"``, ``"stop"`` (every rank stops at the end of the epoch), ``"raise"``
            (:class:`~lightning_xai.DriftDetectedError` once the epoch's scalars are logged) or a callable receiving
            each :class:`~lightning_xai.DriftAlert` on every rank (what it raises ends the run).
        cooldown: evaluations after an alert during which that method raises no further alert (detector and rules).
        probe_threshold: a probe "drifted" when its drift is above this (``share`` and ``probe_indices``).
        topk: fraction of most-attributed cells compared by the ``topk`` metric.

    Example::

        >>> DriftPolicy(warmup_epochs=1, on_drift="stop").on_drift
        'stop'
    """

    warmup_epochs: int = 2
    reference_epoch: int | None = None
    detector: ShiftDetector | Literal["default"] | None = "default"
    rules: Sequence[DriftRule] = ()
    on_drift: OnDrift = "warn"
    cooldown: int = 3
    probe_threshold: float = 0.4
    topk: float = 0.1

    def __post_init__(self) -> None:
        _set(self, "warmup_epochs", check_int("warmup_epochs", self.warmup_epochs, 0, where="DriftPolicy"))
        reference = check_int("reference_epoch", self.reference_epoch, 0, allow_none=True, where="DriftPolicy")
        _set(self, "reference_epoch", reference)
        _set(self, "cooldown", check_int("cooldown", self.cooldown, 0, where="DriftPolicy"))
        _set(self, "topk", check_float("topk", self.topk, 0.0, 1.0, low_open=True, where="DriftPolicy"))
        threshold = check_float("probe_threshold", self.probe_threshold, 0.0, 1.0, where="DriftPolicy")
        _set(self, "probe_threshold", threshold)
        on_drift, rules = self.on_drift, self.rules
        if not (callable(on_drift) or (isinstance(on_drift, str) and on_drift in ON_DRIFT_ACTIONS)):
            raise ValueError(
                f"`DriftPolicy.on_drift={on_drift!r}` is not supported; use one of {list(ON_DRIFT_ACTIONS)} or a "
                "callable that receives a DriftAlert."
            )
        if isinstance(rules, (DriftRule, str)) or not isinstance(rules, Sequence):
            raise ValueError(f"`DriftPolicy.rules` must be a sequence of DriftRule, e.g. (DriftRule(),), got {rules!r}")
        if bad := [rule for rule in rules if not isinstance(rule, DriftRule)]:
            raise ValueError(f"`DriftPolicy.rules` must hold DriftRule instances, got {describe(bad[0])}.")
        _set(self, "rules", tuple(rules))
        for rule in self.rules:  # a share counts probes whose drift is over probe_threshold: a top-k drift is <= 1
            if (rule.metric, rule.statistic) == ("topk", "share") and self.probe_threshold >= 1.0:
                raise ValueError(
                    f"`DriftPolicy(probe_threshold={self.probe_threshold})` leaves DriftRule(metric='topk', "
                    "statistic='share') nothing to count: a top-k drift is at most 1, never over it, so the rule "
                    "could never fire; lower probe_threshold (e.g. the default 0.4) or watch the median."
                )
        if not (self.detector is None or isinstance(self.detector, ShiftDetector) or self.detector == "default"):
            raise ValueError(
                f"`DriftPolicy(detector=...)` must be 'default', a ShiftDetector or None, got {describe(self.detector)}"
                "; pass e.g. ShiftDetector(ratio=4.0), or None for the rules alone."
            )


@dataclass(frozen=True, eq=False)
class Display:
    """What is shown: the pictures and the extra measures of the maps.

    Args:
        colormap: any name of ``matplotlib.colormaps`` (e.g. ``"jet"``, ``"viridis"``, ``"inferno"``, ``"turbo"``),
            case-insensitive where that is unambiguous.
        tile_size: pixels per tile of the explanation sheet ``xai/sheet`` (small inputs are upscaled).
        log_heatmaps: also log the bare heatmaps (``xai/<method>/heatmap``).
        log_grids: also log the compact grids, one tile per probe at the input's resolution (``xai/probes`` once,
            ``xai/<method>/overlay`` per evaluation); the sheet shows the same maps, so they are off by default.
        background_logging: encode the pictures and write events on a background thread.
        quality: measures of the maps (``xai/<method>/quality/...``): any of ``("deletion", "insertion",
            "sparseness", "entropy")`` (docs/quality.md).
        probe_masks: one boolean ``(H, W)`` ground-truth mask per probe (``(N, H, W)``, or a callable ``(images,
            labels) -> masks``): adds ``xai/localization/<method>/relevance_mass`` and ``.../pointing_game``.

    Example::

        >>> Display(colormap="viridis", quality=["entropy"]).quality
        ('entropy',)
    """

    colormap: str = "jet"
    tile_size: int = 128
    log_heatmaps: bool = False
    log_grids: bool = False
    background_logging: bool = True
    quality: Sequence[str] = ()
    probe_masks: Tensor | Callable[[Tensor, Tensor | None], Tensor] | None = None

    def __post_init__(self) -> None:
        _set(self, "colormap", check_colormap(self.colormap))
        _set(self, "tile_size", check_int("tile_size", self.tile_size, 16, where="Display"))  # 16 px a tile at least
        for key in ("log_heatmaps", "log_grids", "background_logging"):
            _set(self, key, check_bool(key, getattr(self, key), where="Display"))
        _set(self, "quality", check_quality(self.quality))
        if self.probe_masks is not None and not callable(self.probe_masks):
            fix = "Pass one boolean (H, W) mask per probe (N, H, W)."
            _set(self, "probe_masks", as_tensor(self.probe_masks, "`Display.probe_masks`", fix))


@dataclass(frozen=True, eq=False)
class Budget:
    """What the monitor may cost (docs/performance.md); IG's automatic step search also never spends more than the
    training time since the last evaluation.

    Args:
        max_overhead: keep the monitor's whole cost within this share of the rest of the run (e.g. 0.05; above 1 is
            warned: 5 means 500 %): fewer IG steps first (never below 8), then skipped evaluations (``xai/skipped``).
        max_seconds_per_epoch: a time limit for one evaluation: IG cuts its steps to fit (``xai/<method>/
            budget_limited``; such a map is shown, not compared), a method with no time left is skipped that epoch
            (``xai/errors``).

    Example::

        >>> Budget(max_overhead=0.05).max_seconds_per_epoch is None
        True
    """

    max_overhead: float | None = None
    max_seconds_per_epoch: float | None = None

    def __post_init__(self) -> None:
        for key in ("max_overhead", "max_seconds_per_epoch"):
            _set(self, key, check_float(key, getattr(self, key), 0.0, low_open=True, allow_none=True, where="Budget"))
        if self.max_overhead is not None and self.max_overhead > 1:  # a share: 5 is 500 %, not 5 %
            warn(
                f"`Budget(max_overhead={self.max_overhead:g})` lets the monitor cost up to {self.max_overhead:g} "
                f"times the rest of the run ({self.max_overhead:.0%}); it is a share of the run's time: 5 % is "
                "max_overhead=0.05."
            )


def normalize_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The checked and normalised arguments of :class:`~lightning_xai.AttributionMonitor` (its ``locals()``): the
    settings objects made (their defaults for None) and ``"explainers"`` built by the registry (a method left at
    ``baseline=None`` gets the input that displays as black), each rule's methods among them."""
    a = {k: v for k, v in arguments.items() if k not in ("self", "__class__")}
    name = check_name("name", a.get("name"), allow_none=True)
    if name is not None and (name in RESERVED_NAMES or name in method_names()):
        raise ValueError(
            f"`name={name!r}` would mix this monitor's tags (xai/{name}/...) with an unnamed monitor's; choose "
            f"another name, e.g. name='{name}_run'."
        )
    a["name"], a["probes"] = name, _check_probes(a["probes"])
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
    a["target"], a["denormalize"] = _check_target(a["target"]), check_denormalize(a["denormalize"])
    for key, kind in (("drift", DriftPolicy), ("display", Display), ("budget", Budget)):
        if a[key] is None:
            a[key] = kind()
        elif not isinstance(a[key], kind):
            given, example = a[key], ", ".join(f"{f.name}=..." for f in fields(kind)[:2])
            if isinstance(given, dict):  # as a config file writes it
                example = ", ".join(f"{k}={v!r}" for k, v in given.items())
            elif key == "drift" and isinstance(given, str) and given in ("warn", "stop", "raise"):  # an on_drift= value
                example = f"on_drift={given!r}"
            raise ValueError(
                f"`{key}` must be a {kind.__name__}, e.g. {kind.__name__}({example}); got {describe(given)}."
            )
    a["explainers"] = explainers = build_explainers(a["methods"], black_input(a["denormalize"]))
    if not explainers:
        raise ValueError(f"`methods` is empty; choose at least one of {method_names()}.")
    names = [e.name for e in explainers]
    for rule in a["drift"].rules:  # a rule naming none of the monitor's methods would never fire
        if unknown := [m for m in rule.methods or () if m not in names]:
            raise ValueError(
                f"`DriftPolicy.rules` has DriftRule(methods={rule.methods!r}) but {unknown} is not among this "
                f"monitor's methods {names}; use one of those names (aliases such as 'ig' are accepted)."
            )
    return a


def _check_probes(probes: Any) -> Any:
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


def digest(value: Any) -> str:
    """A short content hash of a tensor (or array-like), ``"(2, 3):d3399b72"``: the package's one fingerprint."""
    data = torch.as_tensor(value).detach().cpu().contiguous()
    return f"{tuple(data.shape)}:{hashlib.sha1(data.numpy().tobytes()).hexdigest()[:8]}"


def state_key_parts(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords of ``Callback._generate_state_key`` from the :func:`normalize_arguments`: what the stored maps
    depend on (thresholds, rules and schedules may change on resume): each method as ``name(setting=value,...)`` from
    its ``config()`` (tensors digested), the probe source (given tensors digested) and the target."""
    probes, target = arguments["probes"], arguments["target"]
    methods = []
    for e in arguments["explainers"]:
        settings = ",".join(f"{k}={digest(v) if isinstance(v, Tensor) else v}" for k, v in e.config().items())
        methods.append(f"{e.name}({settings})")
    if isinstance(probes, (tuple, Tensor)):  # given tensors by content: images, or (images, labels)
        source = "+".join(map(digest, probes if isinstance(probes, tuple) else [probes]))
    else:
        source = "val" if probes is None else type(probes).__qualname__
    target = str(target) if isinstance(target, (str, int)) else digest(target)
    drawn = f"[{arguments['num_probes']},seed={arguments['seed']}]"
    return {"methods": methods, "probes": source + drawn, "target": target}


def run_settings(explainers: Sequence[Any], denormalize: Any, groups: Sequence[Any], **run: Any) -> dict[str, Any]:
    """A monitor's settings as primitives for the report and ``xai/settings``: its ``name``, the methods with what
    they resolved at setup (Grad-CAM's layer, the baselines in words), the other ``run`` values, then the fields of
    every settings object in ``groups``, at one level."""
    methods = {e.name: resolved_method_settings(e, denormalize) for e in explainers}
    out = {"name": run.pop("name"), "methods": methods, **run}
    for f, value in ((f, getattr(group, f.name)) for group in groups for f in fields(group)):
        if isinstance(value, Tensor):  # as primitives: tensors by shape, callables by name
            value = f"tensor{tuple(value.shape)}"
        elif isinstance(value, ShiftDetector):
            value = value.config()
        elif value == "default" and f.name == "detector":
            value = ShiftDetector().config()
        elif isinstance(value, tuple) and value and isinstance(value[0], DriftRule):
            value = [dict(vars(r)) for r in value]
        elif callable(value):
            value = getattr(value, "__name__", "callable")
        out[f.name] = value
    return out
