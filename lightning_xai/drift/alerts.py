"""Drift alerts: the rule, the alert record, and the small state machine that turns a drift series into events."""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_xai.drift.detector import Detection
from lightning_xai.drift.evidence import AlertEvidence, AlertRegion
from lightning_xai.drift.tracker import DriftResult
from lightning_xai.explain.registry import canonical_name

DRIFT_METRICS: dict[str, str] = {
    "rank": "1 - Spearman rank correlation of |A|",
    "topk": "1 - IoU of the top-k most attributed cells",
}
REFERENCES = ("reference", "previous")
STATISTICS = ("median", "share")
#: the message's length the alert keeps to; details live in the :class:`DriftAlert`'s fields
MESSAGE_LIMIT = 200

__all__ = ["AlertEvidence", "AlertRegion", "AlertTracker", "DriftAlert", "DriftDetectedError", "DriftRule", "OnDrift"]


@dataclass(frozen=True)
class DriftAlert:
    """One alert: a drift statistic crossed its threshold.

    Attributes:
        epoch: the epoch of the evaluation that fired.
        global_step: the trainer's global step then.
        method: attribution method (``"gradcam"``, ``"integrated_gradients"``, ...).
        metric: drift metric and reference, e.g. ``"rank_vs_reference"``.
        statistic: ``"median"`` over probes or ``"share"`` of probes over ``probe_threshold`` (fixed rules);
            ``"mean"`` over probes (the detector's movement).
        value: the statistic's value.
        threshold: the rule's threshold.
        probe_indices: probes (grid positions) whose own drift exceeded the probe threshold.
        message: human-readable summary.
        noise: the normal level the threshold was calibrated on (detector alerts; None for fixed rules).
        region: ``(top, left, bottom, right)`` in input pixels, bottom/right inclusive, of the region that gained
            relevance (the largest group's: ``regions[0]``), or None.
        region_share: share of all probes whose largest gain lies in ``region``.
        regions: one :class:`AlertRegion` per class (or probe group) that moved: a shortcut whose place differs by
            class gets one box per class.
        evidence: the maps before and at the alert for the probes that moved (:class:`AlertEvidence`), for the
            evidence image; None for alerts loaded from a checkpoint.
    """

    epoch: int
    global_step: int
    method: str
    metric: str
    statistic: str
    value: float
    threshold: float
    probe_indices: tuple[int, ...]
    message: str
    noise: float | None = None
    region: tuple[int, int, int, int] | None = None
    region_share: float | None = None
    regions: tuple[AlertRegion, ...] = ()
    evidence: AlertEvidence | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Primitives only, so a checkpoint holding it loads with ``torch.load(weights_only=True)`` (no evidence
        maps)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("evidence",)}
        out["probe_indices"] = list(self.probe_indices)
        out["region"] = None if self.region is None else list(self.region)
        out["regions"] = [r.to_dict() for r in self.regions]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftAlert:
        names = {f.name for f in dataclasses.fields(cls)} - {"evidence"}
        values = {k: v for k, v in data.items() if k in names}  # a newer version's fields are ignored
        values["probe_indices"] = tuple(int(i) for i in values["probe_indices"])
        if values.get("region") is not None:
            values["region"] = tuple(int(i) for i in values["region"])
        values["regions"] = tuple(AlertRegion.from_dict(r) for r in values.get("regions", ()))
        if values.get("metric") == "novel_relevance" and values.get("statistic") == "median":
            values["statistic"] = "mean"  # stored by a version that mislabelled the detector's mean
        return cls(**values)


@dataclass(frozen=True)
class DriftRule:
    """When drift becomes an alert.

    After the warm-up (the monitor's ``warmup_epochs``), the rule watches ``statistic`` of ``metric`` against
    ``reference`` for every method. It fires when the value is ``>= threshold`` for ``patience`` consecutive
    evaluations; it does not fire again while the value stays over the threshold (one event, one alert), nor
    within ``cooldown`` evaluations after firing.

    Args:
        metric: ``"rank"`` (1 − Spearman of |A|) or ``"topk"`` (1 − IoU of the top-k % cells).
        reference: ``"reference"`` (the reference epoch's maps) or ``"previous"`` (last evaluation's).
        statistic: ``"median"`` of the per-probe drift, or ``"share"`` of probes whose drift is over the
            monitor's ``probe_threshold``.
        threshold: value at which it fires.
        patience: consecutive evaluations over the threshold needed (a whole number >= 1; integer-like values such
            as ``2.0`` or ``np.int64(2)`` are converted).
        cooldown: evaluations after an alert during which this rule stays silent for that method (a whole number
            >= 0, converted likewise).
        methods: restrict to these methods (None: all).

    Example::

        >>> DriftRule(metric="topk", threshold=0.6).key
        'topk_vs_reference/median'
    """

    metric: str = "rank"
    reference: str = "reference"
    statistic: str = "median"
    threshold: float = 0.4
    patience: int = 1
    cooldown: int = 3
    methods: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_choice("DriftRule.metric", self.metric, tuple(DRIFT_METRICS))
        _check_choice("DriftRule.reference", self.reference, REFERENCES)
        _check_choice("DriftRule.statistic", self.statistic, STATISTICS)
        object.__setattr__(self, "patience", _whole("patience", self.patience, 1))
        object.__setattr__(self, "cooldown", _whole("cooldown", self.cooldown, 0))
        if not (isinstance(self.threshold, (int, float)) and not isinstance(self.threshold, bool)) or not math.isfinite(
            self.threshold
        ):
            raise ValueError(f"`DriftRule.threshold` must be a finite number, got {self.threshold!r}.")
        if self.methods is not None:
            if isinstance(self.methods, str) or not all(isinstance(m, str) for m in self.methods):
                raise ValueError(
                    f"`DriftRule.methods` must be a tuple of method names such as ('gradcam',), got {self.methods!r}."
                )
            # aliases mean what they mean in `methods=`: ("ig",) watches integrated_gradients
            object.__setattr__(self, "methods", tuple(canonical_name(m) for m in self.methods))

    @property
    def key(self) -> str:
        """The scalar this rule watches, relative to ``xai/<method>/drift/``."""
        return f"{self.metric}_vs_{self.reference}/{self.statistic}"


def _whole(argument: str, value: object, low: int) -> int:
    """``value`` as an int ``>= low``: ints, numpy integers, 0-d tensors and floats with a whole value are converted;
    fractions, bools and anything else are refused (a fractional count of evaluations would never be reached)."""
    number: int | None = None
    shown = repr(value)
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype != torch.bool and not value.is_complex():
        value = value.item()
    if not isinstance(value, (bool, np.bool_, str)):
        try:
            number = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
                number = int(float(value))
    if number is None or number < low:
        fix = f"pass a whole number such as {argument}={low + 1}"
        if isinstance(value, str):
            try:
                value = float(value)  # a number in a string: suggest it
            except ValueError:
                pass
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value):
            options = sorted({max(low, math.floor(float(value))), max(low, math.ceil(float(value)))})
            fix = "pass " + " or ".join(f"{argument}={option}" for option in options)
        raise ValueError(f"`DriftRule.{argument}` must be a whole number of evaluations >= {low}, got {shown}; {fix}.")
    return int(number)


def _check_choice(argument: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"`{argument}={value!r}` is not supported; choose one of {list(allowed)}.")


@dataclass
class _RuleState:
    streak: int = 0
    cooldown_left: int = 0
    firing: bool = False


class AlertTracker:
    """Applies rules to each evaluation's drift statistics; keeps every alert of the run.

    Example::

        >>> tracker = AlertTracker([DriftRule(threshold=0.5, patience=2, cooldown=0)])
        >>> series = (0.6, 0.7, 0.8, 0.1, 0.9, 0.9)
        >>> [len(tracker.update("gradcam", {"rank_vs_reference/median": v})) for v in series]
        [0, 1, 0, 0, 0, 1]
    """

    def __init__(self, rules: Sequence[DriftRule]) -> None:
        self.rules = list(rules)
        self._states: dict[str, _RuleState] = {}
        self.alerts: list[DriftAlert] = []

    def update(self, method: str, statistics: dict[str, float]) -> list[DriftRule]:
        """Feed one evaluation's statistics for ``method``; return the rules that fire now."""
        fired: list[DriftRule] = []
        for index, rule in enumerate(self.rules):
            if rule.methods is not None and method not in rule.methods:
                continue
            value = statistics.get(rule.key)
            if value is None:
                continue
            state = self._states.setdefault(f"{index}:{method}", _RuleState())
            over = value >= rule.threshold
            state.streak = state.streak + 1 if over else 0
            if not over:
                state.firing = False
            if over and state.streak >= rule.patience and not state.firing and state.cooldown_left == 0:
                state.firing = True
                state.cooldown_left = rule.cooldown + 1  # this evaluation, then `cooldown` silent ones
                fired.append(rule)
            if state.cooldown_left > 0:
                state.cooldown_left -= 1
        return fired

    def check(
        self,
        method: str,
        epoch: int,
        step: int,
        drift: DriftResult,
        detection: Detection | None,
        probe_threshold: float,
    ) -> list[DriftAlert]:
        """This evaluation's alerts for ``method``: the detector's (when it fired) and every fixed rule's that fires
        (once the warm-up is over); each is added to :attr:`alerts`."""
        new: list[DriftAlert] = []
        if detection is not None and detection.fired:
            new.append(detection_alert(method, epoch, step, detection))
        if drift.alerts_armed:
            for rule in self.update(method, drift.statistics):
                per_probe = drift.per_probe[f"{rule.metric}_vs_{rule.reference}"]
                cut = rule.threshold if rule.statistic == "median" else probe_threshold
                over = tuple(int(i) for i in torch.nonzero(per_probe >= cut).flatten())
                new.append(rule_alert(rule, method, epoch, step, drift.statistics[rule.key], over))
        self.alerts.extend(new)
        return new

    def state_dict(self) -> dict[str, Any]:
        return {
            "states": {k: dataclasses.asdict(v) for k, v in self._states.items()},
            "alerts": [a.to_dict() for a in self.alerts],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._states = {k: _RuleState(**v) for k, v in state.get("states", {}).items()}
        self.alerts = [DriftAlert.from_dict(a) for a in state.get("alerts", [])]


def detection_alert(method: str, epoch: int, step: int, d: Detection) -> DriftAlert:
    """The alert for a detector that fired: a message under :data:`MESSAGE_LIMIT` characters that names the classes
    and the places; the numbers, boxes and maps are in the alert's fields."""
    assert d.threshold is not None
    moved = f"{len(d.probe_indices)}/{d.num_probes}" if d.num_probes else f"{len(d.probe_indices)}"
    head = f"Attribution drift at epoch {epoch} ({method}): {moved} probes moved relevance to places all probes ignored"
    return DriftAlert(
        epoch=epoch,
        global_step=step,
        method=method,
        metric="novel_relevance",
        statistic="mean",
        value=d.score,
        threshold=d.threshold,
        probe_indices=d.probe_indices,
        message=_with_places(head, d.regions, f" (mean share moved {d.score:.1%}, threshold {d.threshold:.1%})."),
        noise=d.noise,
        region=d.region,
        region_share=d.region_share,
        regions=d.regions,
        evidence=d.evidence,
    )


def _with_places(head: str, regions: Sequence[AlertRegion], tail: str) -> str:
    """``head`` + the places, each with the classes that moved there, as many as fit in :data:`MESSAGE_LIMIT` (with
    pixel rows and columns while they fit), + ``tail`` if it fits."""
    places: dict[str, list[AlertRegion]] = {}
    for region in regions:
        places.setdefault(region.place or "there", []).append(region)
    order = sorted(places.items(), key=lambda item: -len(item[1]))
    parts: list[tuple[str, str]] = []
    for place, group in order:
        classes = sorted({c for r in group for c in r.classes})
        who = (f"class{'es' if len(classes) > 1 else ''} {_numbers(classes)}") if classes else group[0].label
        top, left, bottom, right = group[0].box
        parts.append(
            (f"{who} {place}", f" (rows {top}-{bottom - 1}, cols {left}-{right - 1})" if len(group) == 1 else "")
        )
    for shown in range(len(parts), 0, -1):  # every place if they fit (with their pixels if those fit too)
        for with_pixels in (True, False):
            listed = "; ".join(text + (pixels if with_pixels else "") for text, pixels in parts[:shown])
            more = f"; +{len(parts) - shown} more" if shown < len(parts) else ""
            message = f"{head}: {listed}{more}"
            if len(message) + 1 <= MESSAGE_LIMIT:
                return message + (tail if len(message) + len(tail) <= MESSAGE_LIMIT else ".")
    return head + (tail if len(head) + len(tail) <= MESSAGE_LIMIT else ".")


def _numbers(values: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 7]`` -> ``"0-3,7"``."""
    out: list[str] = []
    start = prev = None
    for v in [*values, None]:
        if v is not None and prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None and prev is not None:
            out.append(f"{start}-{prev}" if prev - start >= 2 else ",".join(str(x) for x in range(start, prev + 1)))
        start = prev = v
    return ",".join(out)


def rule_alert(rule: DriftRule, method: str, epoch: int, step: int, value: float, over: tuple[int, ...]) -> DriftAlert:
    """The alert for a fixed :class:`DriftRule` that fired (the probes over the cut are in ``probe_indices``)."""
    message = (
        f"Attribution drift at epoch {epoch} ({method}): {rule.key} = {value:.3f} >= {rule.threshold:.3f}, "
        f"{len(over)} probes over it. The model may rely on different evidence (e.g. a shortcut)."
    )
    return DriftAlert(
        epoch=epoch,
        global_step=step,
        method=method,
        metric=f"{rule.metric}_vs_{rule.reference}",
        statistic=rule.statistic,
        value=value,
        threshold=rule.threshold,
        probe_indices=over,
        message=message,
    )


class DriftDetectedError(RuntimeError):
    """Raised by ``on_drift="raise"``; carries the :class:`DriftAlert`."""

    def __init__(self, alert: DriftAlert) -> None:
        super().__init__(alert.message)
        self.alert = alert


#: what ``AttributionMonitor(on_drift=...)`` accepts: "warn", "stop", "raise" or a callable receiving each alert
OnDrift = str | Callable[[DriftAlert], None]
