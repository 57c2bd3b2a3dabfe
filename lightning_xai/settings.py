"""The monitor's grouped settings: what counts as drift and what to do about it (:class:`DriftPolicy`), what is
shown (:class:`Display`) and what it may cost (:class:`Budget`), each checked when it is made."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
from torch import Tensor

from lightning_xai.drift.alerts import DriftRule, OnDrift
from lightning_xai.drift.detector import ShiftDetector
from lightning_xai.explain.base import check_float, check_int
from lightning_xai.explain.quality import check_quality
from lightning_xai.probes.inputs import as_tensor, describe
from lightning_xai.visualize.log import resolved_method_settings
from lightning_xai.visualize.render import check_colormap

ON_DRIFT_ACTIONS = ("warn", "stop", "raise")


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
        _set(self, "warmup_epochs", check_int("DriftPolicy.warmup_epochs", self.warmup_epochs, 0))
        reference = check_int("DriftPolicy.reference_epoch", self.reference_epoch, 0, allow_none=True)
        _set(self, "reference_epoch", reference)
        _set(self, "cooldown", check_int("DriftPolicy.cooldown", self.cooldown, 0))
        _set(self, "topk", check_float("DriftPolicy.topk", self.topk, 0.0, 1.0, low_open=True))
        _set(self, "probe_threshold", check_float("DriftPolicy.probe_threshold", self.probe_threshold, 0.0, 1.0))
        on_drift = self.on_drift
        if not (callable(on_drift) or (isinstance(on_drift, str) and on_drift in ON_DRIFT_ACTIONS)):
            raise ValueError(
                f"`DriftPolicy.on_drift={on_drift!r}` is not supported; use one of {list(ON_DRIFT_ACTIONS)} or a "
                "callable that receives a DriftAlert."
            )
        rules = self.rules
        if isinstance(rules, (DriftRule, str)) or not isinstance(rules, Sequence):
            raise ValueError(f"`DriftPolicy.rules` must be a sequence of DriftRule, e.g. (DriftRule(),), got {rules!r}")
        if bad := [rule for rule in rules if not isinstance(rule, DriftRule)]:
            raise ValueError(f"`DriftPolicy.rules` must hold DriftRule instances, got {describe(bad[0])}.")
        _set(self, "rules", tuple(rules))
        if not (self.detector is None or isinstance(self.detector, ShiftDetector) or self.detector == "default"):
            raise ValueError(
                f"`DriftPolicy.detector` must be 'default', a ShiftDetector or None, got {describe(self.detector)}"
            )


@dataclass(frozen=True, eq=False)
class Display:
    """What is shown: the pictures and the extra measures of the maps.

    Args:
        colormap: ``"jet"``, ``"viridis"``, ``"inferno"`` or ``"turbo"``.
        tile_size: pixels per tile of the explanation sheet ``xai/sheet`` (small inputs are upscaled).
        log_heatmaps: also log the bare heatmaps (``xai/<method>/heatmap``).
        log_grids: also log the compact 32-px grids (``xai/probes`` once, ``xai/<method>/overlay`` per evaluation);
            the sheet shows the same maps, so they are off by default.
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
        _set(self, "tile_size", check_int("Display.tile_size", self.tile_size, 16))  # the sheet needs 16 px a tile
        for key in ("log_heatmaps", "log_grids", "background_logging"):
            if not isinstance(value := getattr(self, key), (bool, np.bool_)):
                raise ValueError(f"`Display.{key}` must be True or False, got {describe(value)}.")
            _set(self, key, bool(value))
        _set(self, "quality", check_quality(self.quality))
        if self.probe_masks is not None and not callable(self.probe_masks):
            fix = "Pass one boolean (H, W) mask per probe (N, H, W)."
            _set(self, "probe_masks", as_tensor(self.probe_masks, "`Display.probe_masks`", fix))


@dataclass(frozen=True, eq=False)
class Budget:
    """What the monitor may cost (docs/performance.md); IG's automatic step search also never spends more than the
    training time since the last evaluation.

    Args:
        max_overhead: keep the monitor's whole cost within this share of the rest of the run (e.g. 0.05): fewer IG
            steps first (never below 8), then skipped evaluations (``xai/skipped``).
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
            _set(self, key, check_float(f"Budget.{key}", getattr(self, key), 0.0, low_open=True, allow_none=True))


def as_settings(kind: type, value: Any, argument: str) -> Any:
    """``value`` if it is a ``kind``, ``kind()`` for None; else a ``ValueError`` that says how to make one."""
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    example = ", ".join(f"{f.name}=..." for f in fields(kind)[:2])
    raise ValueError(f"`{argument}` must be a {kind.__name__}, e.g. {kind.__name__}({example}); got {describe(value)}.")


def run_settings(
    name: str | None,
    explainers: Sequence[Any],
    target: Any,
    every_n_epochs: int,
    denormalize: Any,
    num_probes: int,
    groups: Sequence[Any],
) -> dict[str, Any]:
    """A monitor's settings as primitives for the report and ``xai/settings``: the methods with what they resolved
    at setup (Grad-CAM's layer, the baselines in words), then the fields of every settings object, at one level.

    Example::

        >>> from lightning_xai.explain import GradCam
        >>> s = run_settings("val", [GradCam()], "label", 1, None, 8, [DriftPolicy(warmup_epochs=1), Budget()])
        >>> s["methods"]["gradcam"]["layer"], s["warmup_epochs"], s["detector"]["cells"], s["max_overhead"]
        ('automatic (chosen at setup)', 1, 8, None)
    """
    methods = {e.name: resolved_method_settings(e, denormalize) for e in explainers}
    out = {"name": name, "methods": methods, "target": str(target), "every_n_epochs": every_n_epochs}
    out["num_probes"] = num_probes
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
