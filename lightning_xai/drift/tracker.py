"""Remember the previous and the reference attribution maps and measure how far each new map moved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_xai.functional import spearman_distance, topk_iou_distance


@dataclass
class DriftResult:
    """Drift of one method at one evaluation: ``per_probe`` (``"<metric>_vs_<reference>"`` → ``(P,)`` CPU tensor), its
    ``statistics`` (``".../median"`` and ``".../share"``), ``alerts_armed`` (after the reference: rules apply)."""

    per_probe: dict[str, Tensor] = field(default_factory=dict)
    statistics: dict[str, float] = field(default_factory=dict)
    alerts_armed: bool = False


class DriftTracker:
    """Per method: the reference maps (first evaluation at or after ``warmup_epochs``, or the pinned
    ``reference_epoch``), the previous evaluation's maps, and the drift of each new map against both.

    Example::

        >>> tracker = DriftTracker(warmup_epochs=1)
        >>> [sorted(tracker.update("gradcam", epoch, torch.rand(4, 3, 3)).statistics)[:2] for epoch in (0, 1)]
        [[], ['rank_vs_previous/median', 'rank_vs_previous/share']]
    """

    def __init__(
        self,
        warmup_epochs: int = 2,
        reference_epoch: int | None = None,
        topk: float = 0.1,
        probe_threshold: float = 0.4,
    ) -> None:
        self.warmup_epochs, self.reference_epoch = warmup_epochs, reference_epoch
        self.topk, self.probe_threshold = topk, probe_threshold
        self.reference: dict[str, Tensor] = {}
        self.reference_epochs: dict[str, int] = {}
        self.previous: dict[str, Tensor] = {}

    def distances(self, current: Tensor, other: Tensor) -> dict[str, Tensor]:
        """Per-probe drift of ``current`` against ``other`` for every metric."""
        ref = other.to(current.device)
        return {"rank": spearman_distance(current, ref).cpu(), "topk": topk_iou_distance(current, ref, self.topk).cpu()}

    def update(self, method: str, epoch: int, raw: Tensor) -> DriftResult:
        """Measure ``raw`` ``(P, h, w)`` against the stored maps, then store it as previous (and reference)."""
        result = DriftResult()
        raw = raw.detach().float()
        stored = {"previous": self.previous, "reference": self.reference}
        if any(method in maps and maps[method].shape != raw.shape for maps in stored.values()):
            for maps in (self.previous, self.reference, self.reference_epochs):  # the layer or probes changed: restart
                maps.pop(method, None)
        for name, maps in stored.items():
            for metric, values in (self.distances(raw, maps[method]) if method in maps else {}).items():
                key, d = f"{metric}_vs_{name}", values.double()
                result.per_probe[key] = values
                result.statistics[f"{key}/median"] = float(torch.quantile(d, 0.5).float())  # mean of the middle two
                result.statistics[f"{key}/share"] = float((d > self.probe_threshold).double().mean())
        # the pinned epoch, or the first evaluated after it (a skipped method); else the end of the warm-up
        first = self.warmup_epochs if self.reference_epoch is None else self.reference_epoch
        if method not in self.reference and epoch >= first:
            self.reference[method], self.reference_epochs[method] = raw.cpu().clone(), epoch
            for metric in ("rank", "topk"):  # the reference itself: zero drift, logged for continuity
                result.per_probe[f"{metric}_vs_reference"] = torch.zeros(raw.shape[0])
                result.statistics.update({f"{metric}_vs_reference/median": 0.0, f"{metric}_vs_reference/share": 0.0})
        result.alerts_armed = epoch > self.reference_epochs.get(method, epoch)
        self.previous[method] = raw.cpu().clone()
        return result

    def state_dict(self) -> dict[str, Any]:
        return {
            "reference": {k: v.clone() for k, v in self.reference.items()},
            "reference_epochs": dict(self.reference_epochs),
            "previous": {k: v.clone() for k, v in self.previous.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reference = dict(state.get("reference", {}))
        self.reference_epochs = {k: int(v) for k, v in state.get("reference_epochs", {}).items()}
        self.previous = dict(state.get("previous", {}))
