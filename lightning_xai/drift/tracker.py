"""Remember the previous and the reference attribution maps and measure how far each new map moved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_xai.functional import spearman_distance, topk_iou_distance


@dataclass
class DriftResult:
    """Drift of one method at one evaluation.

    Attributes:
        per_probe: ``"<metric>_vs_<reference>"`` → ``(P,)`` CPU float tensor of per-probe drift.
        statistics: ``"<metric>_vs_<reference>/median"`` and ``".../share"`` → float.
        alerts_armed: True once the warm-up is over and a reference exists (alert rules apply).
    """

    per_probe: dict[str, Tensor] = field(default_factory=dict)
    statistics: dict[str, float] = field(default_factory=dict)
    alerts_armed: bool = False


def summarize(distances: Tensor, probe_threshold: float) -> dict[str, float]:
    """Median over probes (the true median, mean of the two middle values for even counts) and the share of
    probes whose drift exceeds ``probe_threshold``.

    Example::

        >>> summarize(torch.tensor([0.1, 0.2, 0.6, 0.9]), 0.5)
        {'median': 0.4000000059604645, 'share': 0.5}
    """
    d = distances.detach().double().cpu()
    return {
        "median": float(torch.quantile(d, 0.5).float()),
        "share": float((d > probe_threshold).double().mean()),
    }


class DriftTracker:
    """Per method: the reference maps (first evaluation at or after ``warmup_epochs``, or the pinned
    ``reference_epoch``), the previous evaluation's maps, and the drift of each new map against both.

    Example::

        >>> tracker = DriftTracker(warmup_epochs=1)
        >>> tracker.update("gradcam", 0, torch.rand(4, 3, 3)).statistics  # no previous, no reference yet
        {}
        >>> sorted(tracker.update("gradcam", 1, torch.rand(4, 3, 3)).statistics)[:2]
        ['rank_vs_previous/median', 'rank_vs_previous/share']
    """

    def __init__(
        self,
        warmup_epochs: int = 2,
        reference_epoch: int | None = None,
        topk: float = 0.1,
        probe_threshold: float = 0.4,
    ) -> None:
        self.warmup_epochs = warmup_epochs
        self.reference_epoch = reference_epoch
        self.topk = topk
        self.probe_threshold = probe_threshold
        self.reference: dict[str, Tensor] = {}
        self.reference_epochs: dict[str, int] = {}
        self.previous: dict[str, Tensor] = {}

    def _is_reference_epoch(self, epoch: int) -> bool:
        if self.reference_epoch is not None:  # that epoch, or the first evaluated after it (a skipped method)
            return epoch >= self.reference_epoch
        return epoch >= self.warmup_epochs

    def distances(self, current: Tensor, other: Tensor) -> dict[str, Tensor]:
        """Per-probe drift of ``current`` against ``other`` for every metric."""
        other = other.to(current.device)
        return {
            "rank": spearman_distance(current, other).cpu(),
            "topk": topk_iou_distance(current, other, k=self.topk).cpu(),
        }

    def update(self, method: str, epoch: int, raw: Tensor) -> DriftResult:
        """Measure ``raw`` ``(P, h, w)`` against the stored maps, then store it as previous (and reference)."""
        result = DriftResult()
        raw = raw.detach().float()
        stored_maps = [m for m in (self.previous.get(method), self.reference.get(method)) if m is not None]
        if any(m.shape != raw.shape for m in stored_maps):  # the layer or the probes changed: start over
            self.previous.pop(method, None)
            self.reference.pop(method, None)
            self.reference_epochs.pop(method, None)
        for name, stored in (
            ("previous", self.previous.get(method)),
            ("reference", self.reference.get(method)),
        ):
            if stored is None:
                continue
            for metric, values in self.distances(raw, stored).items():
                key = f"{metric}_vs_{name}"
                result.per_probe[key] = values
                for stat, value in summarize(values, self.probe_threshold).items():
                    result.statistics[f"{key}/{stat}"] = value
        if method not in self.reference and self._is_reference_epoch(epoch):
            self.reference[method] = raw.cpu().clone()
            self.reference_epochs[method] = epoch
            for metric in ("rank", "topk"):  # the reference itself: zero drift, logged for continuity
                key = f"{metric}_vs_reference"
                result.per_probe[key] = torch.zeros(raw.shape[0])
                result.statistics[f"{key}/median"] = 0.0
                result.statistics[f"{key}/share"] = 0.0
        ref_epoch = self.reference_epochs.get(method)
        result.alerts_armed = ref_epoch is not None and epoch > ref_epoch
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
