"""Drift alerts: the rule, the alert record, and the small state machine that turns a drift series into events."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DRIFT_METRICS: dict[str, str] = {
    "rank": "1 - Spearman rank correlation of |A|",
    "topk": "1 - IoU of the top-k most attributed cells",
}
REFERENCES = ("reference", "previous")
STATISTICS = ("median", "share")


@dataclass(frozen=True)
class DriftAlert:
    """One alert: a drift statistic crossed its threshold.

    Attributes:
        epoch: the epoch of the evaluation that fired.
        global_step: the trainer's global step then.
        method: attribution method (``"gradcam"``, ``"integrated_gradients"``, ...).
        metric: drift metric and reference, e.g. ``"rank_vs_reference"``.
        statistic: ``"median"`` over probes or ``"share"`` of probes over ``probe_threshold``.
        value: the statistic's value.
        threshold: the rule's threshold.
        probe_indices: probes (grid positions) whose own drift exceeded the probe threshold.
        message: human-readable summary.
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

    def to_dict(self) -> dict[str, Any]:
        """Primitives only, so a checkpoint holding it loads with ``torch.load(weights_only=True)``."""
        out = dataclasses.asdict(self)
        out["probe_indices"] = list(self.probe_indices)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftAlert:
        values = dict(data)
        values["probe_indices"] = tuple(int(i) for i in values["probe_indices"])
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
        patience: consecutive evaluations over the threshold needed.
        cooldown: evaluations after an alert during which this rule stays silent for that method.
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
        if self.patience < 1:
            raise ValueError(f"`DriftRule.patience` must be >= 1, got {self.patience}.")
        if self.cooldown < 0:
            raise ValueError(f"`DriftRule.cooldown` must be >= 0, got {self.cooldown}.")

    @property
    def key(self) -> str:
        """The scalar this rule watches, relative to ``xai/<method>/drift/``."""
        return f"{self.metric}_vs_{self.reference}/{self.statistic}"


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

    def state_dict(self) -> dict[str, Any]:
        return {
            "states": {k: dataclasses.asdict(v) for k, v in self._states.items()},
            "alerts": [a.to_dict() for a in self.alerts],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._states = {k: _RuleState(**v) for k, v in state.get("states", {}).items()}
        self.alerts = [DriftAlert.from_dict(a) for a in state.get("alerts", [])]
