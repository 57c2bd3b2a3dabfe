"""One evaluation's measurements as the scalars the monitor logs and an :class:`Evaluation` for ``monitor.history``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lightning_xai.drift.alerts import AlertTracker, DriftAlert
from lightning_xai.drift.detector import Detection, ShiftDetector, Verify
from lightning_xai.drift.evidence import known_fields, primitives
from lightning_xai.drift.tracker import DriftTracker
from lightning_xai.explain.run import ProbeExplanations
from lightning_xai.functional import pointing_game, relevance_mass


@dataclass
class Evaluation:
    """What one evaluation of the monitor produced (one item of ``AttributionMonitor.history``).

    Attributes:
        epoch: when it ran (and ``global_step``).
        scalars: every logged ``xai/...`` scalar.
        errors: one message per method skipped or not compared (failure, NaN, time budget); ``alerts``: its alerts.
        uncompared: the methods whose maps were not compared (the time budget cut them, no relevance on any probe).
        explain_seconds: wall time of the explanations (prediction pass and every method).
        cost_seconds: what ``max_overhead`` counts: its wall time plus the background rendering's CPU time.
    """

    epoch: int
    global_step: int
    scalars: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    alerts: list[DriftAlert] = field(default_factory=list)
    explain_seconds: float = 0.0
    cost_seconds: float = 0.0
    uncompared: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Primitives only (checkpoints load with ``weights_only=True``)."""
        return primitives(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        values = known_fields(cls, data)
        values["alerts"] = [DriftAlert.from_dict(a) for a in values.get("alerts", [])]
        values["scalars"] = shared_keys(values.get("scalars", {}))
        return cls(**values)


def shared_keys(scalars: dict[str, float]) -> dict[str, float]:
    """``scalars`` keyed by interned strings: every evaluation's record shares its key names with the others, so a
    long run's history holds (and its checkpoint pickles) each name once, not once per evaluation."""
    return {sys.intern(str(key)): value for key, value in scalars.items()}


class SavedHistory:
    """``history`` as the checkpoint stores it (each :meth:`Evaluation.to_dict`), each record converted once: a
    checkpoint converts the evaluations since the previous one, not the whole run (``ModelCheckpoint`` saves every
    epoch, twice with ``save_last``). The newest record is converted again at each save: its evaluation may still
    complete it. The dicts are shared between saves: read them, never change them."""

    def __init__(self) -> None:
        self._saved: list[tuple[Evaluation, tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, history: Sequence[Evaluation]) -> list[dict[str, Any]]:
        kept, limit = 0, min(len(self._saved), len(history) - 1)
        while kept < limit and self._saved[kept][0] is history[kept] and self._saved[kept][1] == _looks(history[kept]):
            kept += 1
        self._saved = self._saved[:kept] + [(e, _looks(e), e.to_dict()) for e in history[kept:]]
        return [saved for *_, saved in self._saved]

    def __getstate__(self) -> dict[str, Any]:  # pickled with the monitor (ddp_spawn): converted again there
        return {"_saved": []}


def _looks(e: Evaluation) -> tuple[Any, ...]:
    """What would tell a changed record (an error, an alert or a cost added later) from the one converted."""
    return len(e.scalars), len(e.errors), len(e.alerts), len(e.uncompared), e.cost_seconds, e.explain_seconds


#: why a method's maps are shown but not compared (:func:`not_compared`): the warning's key and what it says
NOT_COMPARED = {
    "budget": (
        "budget_cut",
        "`Budget(max_seconds_per_epoch=...)` cut its work, so its drift is not measured and its rules are not checked "
        "at this evaluation, nor at any later one the budget cuts (the map is still shown; said once: see "
        "`history[i].errors`). Give the evaluation more time, or explain fewer probes.",
    ),
    "empty": (
        "empty",
        "every probe's map is zero, so there is no relevance to compare: its drift is not measured and its rules are "
        "not checked (the sheet shows no heat; a drift of 0 would read as 'nothing moved'). For Grad-CAM: its map is "
        "zero where the layer's weighted evidence for the target is negative everywhere (its ReLU keeps the positive "
        "part): choose another layer with `GradCam(layer=...)`, or rely on the other methods. For any method: a "
        "forward that ends in softmax or sigmoid and is saturated on the probes (probabilities of 0 or 1) has no "
        "gradient to attribute: explain the logits (`forward_fn=` returning the outputs before the softmax).",
    ),
}


def not_compared(explanation: Any, empty: bool = True) -> str:
    """Why a method's maps are shown but neither compared nor stored, or ``""``: ``"budget"`` (the time budget cut
    its work: a worse map, not a drift) or, with ``empty``, ``"empty"`` (no relevance on any probe: "no drift" would
    be false). One rule for the measurement and the sheet's per-probe figures."""
    cut = explanation.diagnostics.get("budget_limited")
    if cut is not None and bool(cut.any()):
        return "budget"
    return "empty" if empty and not bool(explanation.raw.abs().amax()) else ""


def measure(
    done: ProbeExplanations,
    epoch: int,
    step: int,
    drift: DriftTracker,
    detector: ShiftDetector | None,
    tracker: AlertTracker,
    masks: Tensor | None = None,
    warn_once: Callable[[str, str], None] | None = None,
    setup_change: str | None = None,
    colour: bool = True,
    verify: dict[str, Verify] | None = None,
    measure_empty: bool = False,
) -> Evaluation:
    """Measure every method's new maps against the stored ones and check the detector and the rules. A map the time
    budget cut is a worse map, not a drift: neither measured nor stored; nor are a method's maps that are zero on
    every probe (no relevance to compare: "no drift" would be false), unless ``measure_empty`` (the setup check: the
    keys a measurement logs); ``setup_change`` pauses the detector. Unless
    ``colour`` (the probes show colour), a method's ``colour_share`` is neither logged nor watched. ``verify`` puts a
    candidate to the model (:class:`~lightning_xai.drift.detector.ShiftDetector`): ``"region"`` for the maps,
    ``"colour"`` for the colour parts."""
    verify = verify or {}
    record = Evaluation(epoch, step, errors=list(done.errors), explain_seconds=done.seconds)
    scalars = record.scalars
    input_size = (int(done.inputs.shape[-2]), int(done.inputs.shape[-1]))
    armed = epoch >= drift.warmup_epochs and setup_change is None
    reasons = {name: not_compared(x, empty=not measure_empty) for name, x in done.results.items()}
    for name, reason in reasons.items():
        if reason:
            key, why = NOT_COMPARED[reason]
            note = f"{name} at epoch {epoch}: {why}"
            record.errors.append(note)
            if warn_once is not None:
                warn_once(f"{key}_{name}", f"AttributionMonitor: {note}")
    record.uncompared = [name for name, reason in reasons.items() if reason]
    for name, explanation in done.results.items():  # every method's maps first: alerts place boxes on the finest
        if detector is not None and not reasons[name]:
            detector.remember(name, epoch, explanation.raw)
    for name, explanation in done.results.items():
        if not reasons[name]:
            result = drift.update(name, epoch, explanation.raw)
            scalars.update({f"xai/{name}/drift/{key}": value for key, value in result.statistics.items()})
            detection, classes = None, None
            if detector is not None:
                classes = done.targets if done.targets.numel() == explanation.raw.shape[0] else None
                detection = detector.update(
                    *(name, explanation.raw, input_size, armed),
                    classes=classes,
                    epoch=epoch,
                    cooldown=tracker.cooldown,
                    verify=verify.get("region"),
                )
            scalars.update(_detection_scalars(f"xai/{name}/alert", detection))
            spatial = tracker.check(name, epoch, step, result, detection, drift.probe_threshold)
            record.alerts += spatial
            share = explanation.diagnostics.get("colour_share") if colour else None
            if detector is not None and share is not None:  # what the relevance is made of: brightness vs colour
                # per degree of freedom (1 for brightness, C - 1 for colour): an attribution with no preference
                # between them (random channel weights give a colour share of (C - 1) / C) sits at one half
                channels = int(done.inputs.shape[1])
                parts = torch.stack([1 - share, share / (channels - 1)], dim=-1).view(-1, 1, 2)
                moved = detector.update(
                    *(f"{name}/colour", parts, (1, 2), armed),
                    classes=classes,
                    epoch=epoch,
                    cooldown=tracker.cooldown,
                    verify=verify.get("colour"),
                )
                scalars.update(_detection_scalars(f"xai/{name}/alert/colour", moved))
                coloured = tracker.check_colour(name, epoch, step, moved, channels)
                record.alerts += coloured
                if spatial or coloured:  # an alert silences the method's both tests, as the tracker does
                    detector.silence(f"{name}/colour" if spatial else name, tracker.cooldown)
        for key, values in explanation.diagnostics.items():
            if key == "colour_share" and not colour:
                continue
            scalars[f"xai/{name}/{key}"] = float(values.double().median())
        if name in done.method_seconds:  # a method's own diagnostic of that name wins
            scalars.setdefault(f"xai/{name}/seconds", done.method_seconds[name])
        for key, score in (("relevance_mass", relevance_mass), ("pointing_game", pointing_game)):
            if masks is not None:
                scalars[f"xai/localization/{name}/{key}"] = float(score(explanation.display, masks).double().mean())
    if setup_change is not None and detector is not None and epoch >= drift.warmup_epochs:
        rank_zero_info(
            f"AttributionMonitor at epoch {epoch}: the training setup changed ({setup_change}); the detector "
            "measures this evaluation but does not alert on it or calibrate on it."
        )
    scalars["xai/seconds"] = done.seconds
    record.scalars = shared_keys(scalars)
    return record


def monitored(key: str) -> bool:
    """Whether ``key`` (unnamed, ``xai/<method>/...``) is one a user would monitor: a drift median or a detector's
    score. Only these go through ``pl_module.log`` (``callback_metrics``, ``EarlyStopping``, ``ModelCheckpoint``)."""
    return ("/drift/" in key and key.endswith("/median")) or key.endswith(("/alert/score", "/alert/colour/score"))


def _detection_scalars(prefix: str, detection: Detection | None) -> dict[str, float]:
    """The detector's score and threshold, and after a candidate the confirmation that decides the alert."""
    if detection is None:
        return {}
    found = {"score": detection.score, "threshold": detection.threshold}
    if detection.confirmation is not None:
        found["confirmation"], found["confirmation_threshold"] = detection.confirmation
    if detection.follow is not None:  # the transplant test: how often the prediction follows the donor, now/before
        pairs = max(1, detection.follow.pairs)
        found["follow"] = detection.follow.followed / pairs
        found["follow_before"] = detection.follow.followed_before / pairs
        found["follow_p"] = detection.follow.p_value
    return {f"{prefix}/{k}": v for k, v in found.items() if v is not None}
