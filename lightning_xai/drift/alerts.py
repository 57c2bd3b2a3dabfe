"""Drift alerts: the fixed rule, the alert record, and the tracker that turns each evaluation into alerts."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_xai.drift.detector import Detection
from lightning_xai.drift.evidence import AlertEvidence, AlertRegion, known_fields, primitives
from lightning_xai.drift.tracker import DriftResult
from lightning_xai.explain.base import check_float, check_int
from lightning_xai.explain.behaviour import FollowTest
from lightning_xai.explain.registry import canonical_name

#: the message's length the alert keeps to; details live in the :class:`DriftAlert`'s fields
MESSAGE_LIMIT = 200

__all__ = ["AlertEvidence", "AlertRegion", "AlertTracker", "DriftAlert", "DriftDetectedError", "DriftRule", "OnDrift"]


@dataclass(frozen=True)
class DriftAlert:
    """One alert: a drift statistic crossed its threshold.

    Attributes:
        epoch: the epoch of the evaluation that fired (and its ``global_step``); ``method``: the attribution method.
        metric: drift metric and reference, e.g. ``"rank_vs_reference"``; ``"novel_relevance"`` for the detector.
        statistic: ``"median"`` or ``"share"`` (fixed rules); ``"mean"`` over probes (the detector's movement: over
            all probes, or over those past the per-probe level when the detector's subset test passed).
        value: the statistic's value; ``threshold``: the threshold it crossed (``value >= threshold``).
        probe_indices: probes (grid positions) that moved: a detector alert's, those whose own movement passed the
            threshold; a ``share`` rule's, those whose drift is over ``probe_threshold`` (the probes its share
            counts); a ``median`` rule's, those at or over the rule's threshold.
        message: human-readable summary, at most :data:`MESSAGE_LIMIT` characters.
        noise: the normal level the threshold was calibrated on (detector alerts; None for fixed rules).
        region: ``regions[0]``'s box, bottom/right inclusive, or None; ``region_share``: the share of all probes
            whose largest gain lies there.
        regions: one :class:`AlertRegion` per class (or probe group) that moved; ``evidence``: the maps before and at
            the alert (:class:`AlertEvidence`), None when loaded from a checkpoint.
        follow: the transplant test that confirmed it (:class:`~lightning_xai.explain.behaviour.FollowTest`: how
            often the prediction follows a region copied from another class's probe, now and before), if one ran:
            of every region found, together; each named region's own answer is in its ``follow``.
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
    evidence: AlertEvidence | None = field(default=None, compare=False, repr=False, metadata={"saved": False})
    follow: FollowTest | None = None

    def to_dict(self) -> dict[str, Any]:
        """Primitives only, without the evidence maps (checkpoints load with ``weights_only=True``)."""
        return primitives(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftAlert:
        values = known_fields(cls, data)
        values["probe_indices"] = tuple(int(i) for i in values["probe_indices"])
        if values.get("region") is not None:
            values["region"] = tuple(int(i) for i in values["region"])
        values["regions"] = tuple(AlertRegion.from_dict(r) for r in values.get("regions", ()))
        if isinstance(values.get("follow"), dict):
            values["follow"] = FollowTest(**known_fields(FollowTest, values["follow"]))
        if values.get("metric") == "novel_relevance" and values.get("statistic") == "median":
            values["statistic"] = "mean"  # stored by a version that mislabelled the detector's mean
        return cls(**values)


@dataclass(frozen=True)
class DriftRule:
    """When drift becomes an alert, besides the detector: after the warm-up, a rule fires when ``statistic`` of
    ``metric`` against ``reference`` is ``>= threshold`` for ``patience`` consecutive evaluations, and not again while
    it stays over (one event, one alert); ``DriftPolicy.cooldown`` then silences the method (detector and rules).

    Args:
        metric: ``"rank"`` (1 − Spearman of |A|) or ``"topk"`` (1 − IoU of the top-k % cells).
        reference: ``"reference"`` (the reference epoch's maps) or ``"previous"`` (last evaluation's).
        statistic: ``"median"`` of the per-probe drift, or ``"share"`` of probes over ``probe_threshold``.
        threshold: value at which it fires; ``patience``: consecutive evaluations over it needed (a whole number >= 1).
        methods: restrict to these methods (aliases as in ``methods=``; None: all).

    Example::

        >>> DriftRule(metric="topk", threshold=0.6).key
        'topk_vs_reference/median'
    """

    metric: str = "rank"
    reference: str = "reference"
    statistic: str = "median"
    threshold: float = 0.4
    patience: int = 1
    methods: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        choices = {"metric": ("rank", "topk"), "reference": ("reference", "previous"), "statistic": ("median", "share")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                shown = f"`DriftRule({name}={getattr(self, name)!r})`"
                raise ValueError(f"{shown} is not supported; choose one of {list(allowed)}.")
        object.__setattr__(self, "patience", check_int("patience", self.patience, 1, where="DriftRule"))
        # what the watched value can reach (1 - Spearman: [0, 2]; 1 - IoU and a share: [0, 1]): a threshold above
        # it could never fire
        highest = 2.0 if (self.metric, self.statistic) == ("rank", "median") else 1.0
        threshold = check_float("threshold", self.threshold, where="DriftRule")
        if not 0.0 <= threshold <= highest:
            raise ValueError(
                f"`DriftRule(threshold={threshold!r})` is out of range: the {self.statistic} of {self.metric!r} drift "
                f"lies in [0, {highest:g}], so the rule would "
                f"{'never fire' if threshold > highest else 'fire at every evaluation, as threshold=0 does'}; "
                f"choose a threshold in [0, {highest:g}] (e.g. the default 0.4)."
            )
        object.__setattr__(self, "threshold", threshold)
        if self.methods is not None:
            names = self.methods
            if isinstance(names, str) or not names or not all(isinstance(m, str) for m in names):
                raise ValueError(
                    f"`DriftRule(methods=...)` must be a non-empty tuple of method names like ('gradcam',) (None: "
                    f"every method), got {names!r}."
                )
            object.__setattr__(self, "methods", tuple(canonical_name(m) for m in self.methods))

    @property
    def key(self) -> str:
        """The scalar this rule watches, relative to ``xai/<method>/drift/``."""
        return f"{self.metric}_vs_{self.reference}/{self.statistic}"


@dataclass
class _RuleState:
    streak: int = 0
    firing: bool = False


class AlertTracker:
    """Turns each evaluation's detection and drift statistics into alerts, and keeps every alert of the run.

    Args:
        rules: the fixed :class:`DriftRule` s, checked besides the detector.
        cooldown: evaluations after an alert during which that method raises no further alert, from the detector or
            any rule (the detector also skips calibrating on them).

    Example::

        >>> tracker = AlertTracker([DriftRule(threshold=0.5, patience=2)], cooldown=0)
        >>> series = (0.6, 0.7, 0.8, 0.1, 0.9, 0.9)
        >>> [len(tracker.update("gradcam", {"rank_vs_reference/median": v})) for v in series]
        [0, 1, 0, 0, 0, 1]
    """

    def __init__(self, rules: Sequence[DriftRule], cooldown: int = 3) -> None:
        self.rules = list(rules)
        self.cooldown = check_int("cooldown", cooldown, 0, where="AlertTracker")
        self._states: dict[str, _RuleState] = {}  # "<rule index>:<method>"
        self._quiet: dict[str, int] = {}  # method -> evaluations of cooldown left
        self.alerts: list[DriftAlert] = []

    def update(self, method: str, statistics: dict[str, float], detected: bool = False) -> list[DriftRule]:
        """The rules that fire now on ``method``'s ``statistics`` (none in its cooldown; ``detected``: by detector). An
        evaluation without statistics (not armed: the warm-up, a changed setup) does not count towards the cooldown,
        as it does not for the detector."""
        if not statistics and not detected:
            return []
        quiet = self._quiet.get(method, 0)
        fired: list[DriftRule] = []
        for index, rule in enumerate(self.rules):
            value = statistics.get(rule.key)
            if value is None or (rule.methods is not None and method not in rule.methods):
                continue
            state = self._states.setdefault(f"{index}:{method}", _RuleState())
            over = value >= rule.threshold
            state.streak, state.firing = (state.streak + 1, state.firing) if over else (0, False)
            if over and state.streak >= rule.patience and not state.firing and not quiet:
                state.firing = True
                fired.append(rule)
        self._quiet[method] = self.cooldown if (fired or detected) and not quiet else max(0, quiet - 1)
        return fired

    def check(
        self, method: str, epoch: int, step: int, drift: DriftResult, d: Detection | None, probe_threshold: float
    ) -> list[DriftAlert]:
        """This evaluation's alerts for ``method`` (from the detection ``d`` and the rules), added to :attr:`alerts`."""
        new: list[DriftAlert] = []
        if d is not None and d.fired and d.threshold is not None and not self._quiet.get(method, 0):
            message = _detection_message(epoch, method, d, d.threshold)
            found = (d.probe_indices, message, d.noise, d.region, d.region_share, d.regions, d.evidence, d.follow)
            new.append(DriftAlert(epoch, step, method, "novel_relevance", "mean", d.score, d.threshold, *found))
        for rule in self.update(method, drift.statistics if drift.alerts_armed else {}, detected=bool(new)):
            metric, value = f"{rule.metric}_vs_{rule.reference}", drift.statistics[rule.key]
            # a median rule's probes at or over it; a share's drifted ones, in float64 as the tracker's share counts
            # them (a float32 tensor would cast the threshold to float32: 1 - 0.6 would not be over 0.4)
            per_probe = drift.per_probe[metric].double()
            over_cut = per_probe >= rule.threshold if rule.statistic == "median" else per_probe > probe_threshold
            over = tuple(int(i) for i in torch.nonzero(over_cut).flatten())
            message = (
                f"Attribution drift at epoch {epoch} ({method}): {rule.key} = {value:.3f} >= {rule.threshold:.3f}, "
                f"{len(over)} probes over it. The model may rely on different evidence (e.g. a shortcut)."
            )
            new.append(DriftAlert(epoch, step, method, metric, rule.statistic, value, rule.threshold, over, message))
        self.alerts.extend(new)
        return new

    def check_colour(
        self, method: str, epoch: int, step: int, d: Detection | None, channels: int = 3
    ) -> list[DriftAlert]:
        """The alert when ``method``'s relevance moved from brightness into colour (the detector fed the probes'
        ``colour_share`` as two parts per degree of freedom, of ``channels``), added to :attr:`alerts`; it silences
        ``method`` like any alert."""
        if d is None or not d.fired or d.threshold is None or self._quiet.get(method, 0):
            return []

        def share(parts: Tensor) -> float:  # the parts back to the colour share, mean over the probes that moved
            colour = parts[..., 1].double().flatten(1).mean(dim=1) * (channels - 1)
            return float((colour / (parts[..., 0].double().flatten(1).mean(dim=1) + colour)).mean())

        shares = ""
        if d.evidence is not None:
            before, after = share(d.evidence.before), share(d.evidence.after)
            if after <= before:
                return []  # relevance moved out of colour (into brightness, quiet before): not what this test is for
            digits = next((k for k in range(3) if f"{before:.{k}%}" != f"{after:.{k}%}"), None)  # never "59% to 59%"
            shares = "" if digits is None else f" rose from {before:.{digits}%} to {after:.{digits}%}"
        moved = f"{len(d.probe_indices)}/{d.num_probes}" if d.num_probes else f"{len(d.probe_indices)}"
        classes = sorted({c for r in d.regions for c in r.classes})
        who = f" (class{'es' if len(classes) > 1 else ''} {_numbers(classes)})" if classes else ""
        message = (
            f"Attribution drift at epoch {epoch} ({method}): {moved} probes{who} moved relevance into colour: the "
            f"share carried by differences between channels{shares}"
        )
        message = message[: MESSAGE_LIMIT - 1] + "."
        found = (d.probe_indices, message, d.noise)
        alert = DriftAlert(epoch, step, method, "colour_share", "mean", d.score, d.threshold, *found, follow=d.follow)
        self.update(method, {}, detected=True)
        self.alerts.append(alert)
        return [alert]

    def state_dict(self) -> dict[str, Any]:
        return primitives({"states": self._states, "quiet": self._quiet, "alerts": self.alerts})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._states = {k: _RuleState(**known_fields(_RuleState, v)) for k, v in state.get("states", {}).items()}
        self._quiet = {k: int(v) for k, v in state.get("quiet", {}).items()}
        for key, old in state.get("states", {}).items():  # a version whose rules each had their own cooldown
            method = key.split(":", 1)[1]
            self._quiet[method] = max(self._quiet.get(method, 0), int(old.get("cooldown_left", 0)))
        self.alerts = [DriftAlert.from_dict(a) for a in state.get("alerts", [])]


def _detection_message(epoch: int, method: str, d: Detection, threshold: float) -> str:
    """What moved, then as many places (with classes and pixels) and the score as fit in :data:`MESSAGE_LIMIT`."""
    moved = f"{len(d.probe_indices)}/{d.num_probes}" if d.num_probes else f"{len(d.probe_indices)}"
    head = f"Attribution drift at epoch {epoch} ({method}): {moved} probes moved relevance to places all probes ignored"
    tail = f" (mean share moved {d.score:.1%}, threshold {threshold:.1%})."
    if d.follow is not None:  # the model's own answer says more than the score
        tail = f"; {d.follow.summary()}."
    places: dict[str, list[AlertRegion]] = {}
    for region in d.regions:
        places.setdefault(region.place or "there", []).append(region)
    parts: list[tuple[str, str]] = []
    for place, group in sorted(places.items(), key=lambda item: -len(item[1])):
        classes = sorted({c for r in group for c in r.classes})
        who = f"class{'es' if len(classes) > 1 else ''} {_numbers(classes)}" if classes else group[0].label
        top, left, bottom, right = group[0].box
        pixels = f" (rows {top}-{bottom - 1}, cols {left}-{right - 1})" if len(group) == 1 else ""
        parts.append((f"{who} {place}", pixels))
    for shown in range(len(parts), 0, -1):  # every place if they fit (with their pixels if those fit too)
        for with_pixels in (True, False):
            listed = "; ".join(text + (pixels if with_pixels else "") for text, pixels in parts[:shown])
            more = f"; +{len(parts) - shown} more" if shown < len(parts) else ""
            message = f"{head}: {listed}{more}"
            if len(message) + 1 <= MESSAGE_LIMIT:
                return message + (tail if len(message) + len(tail) <= MESSAGE_LIMIT else ".")
    return head + (tail if len(head) + len(tail) <= MESSAGE_LIMIT else ".")


def _numbers(classes: Sequence[int]) -> str:
    """Sorted class numbers with runs of three or more as ranges: ``0-3,7``."""
    runs = [[c for _, c in run] for _, run in itertools.groupby(enumerate(classes), lambda ic: ic[1] - ic[0])]
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) >= 3 else ",".join(map(str, r)) for r in runs)


class DriftDetectedError(RuntimeError):
    """Raised by ``on_drift="raise"``; carries the :class:`DriftAlert`."""

    def __init__(self, alert: DriftAlert) -> None:
        super().__init__(alert.message)
        self.alert = alert


#: what ``AttributionMonitor(on_drift=...)`` accepts: "warn", "stop", "raise" or a callable receiving each alert
OnDrift = str | Callable[[DriftAlert], None]
