"""Remember the previous and the reference attribution maps and measure how far each new map moved."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from lightning_xai.functional import drift as functional
from lightning_xai.functional._common import magnitudes


class _Prepared(NamedTuple):
    """What comparing a map needs, computed once per map (its one sort)."""

    ranks: Tensor  # centred ranks
    constant: Tensor  # constant rows
    top: Tensor  # top-k cells
    nan: Tensor  # rows holding NaN


@dataclass
class DriftResult:
    """Drift of one method at one evaluation: ``per_probe`` (``"<metric>_vs_<reference>"`` → ``(P,)`` CPU tensor), its
    ``statistics`` (``".../median"`` and ``".../share"``), ``alerts_armed`` (after the reference and the warm-up:
    rules apply)."""

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
        self._ready: dict[tuple[str, str], tuple[Tensor, _Prepared]] = {}  # a stored map and its preparation
        self._last: dict[str, tuple[Tensor, Tensor]] = {}  # per method: the last map measured, its rank drift vs ref

    def _prepare(self, maps: Tensor, device: torch.device) -> _Prepared:
        """``maps`` ready for comparisons on ``device``; a stored map's preparation is reused (each is sorted once)."""
        for source, ready in self._ready.values():
            if source is maps and ready.nan.device == device:
                return ready
        rows = magnitudes("maps", maps.to(device))
        ranks, constant = functional._centered_ranks(rows)  # numpy underneath on the CPU (functional.drift)
        return _Prepared(ranks, constant, functional._top_cells(rows, self.topk), rows.isnan().any(dim=1))

    def distances(self, current: Tensor, other: Tensor) -> dict[str, Tensor]:
        """Per-probe drift of ``current`` against ``other`` for every metric (a stored map is not sorted again)."""
        if current.shape != other.shape:
            raise ValueError(f"`current` {tuple(current.shape)} and `other` {tuple(other.shape)} must have one shape.")
        return _compare(self._prepare(current, current.device), self._prepare(other, current.device))

    def update(self, method: str, epoch: int, raw: Tensor) -> DriftResult:
        """Measure ``raw`` ``(P, h, w)`` against the stored maps, then store it as previous (and reference)."""
        result, given = DriftResult(), raw
        raw = raw.detach().float()
        stored = {"previous": self.previous, "reference": self.reference}
        if any(method in maps and maps[method].shape != raw.shape for maps in stored.values()):
            for maps in (self.previous, self.reference, self.reference_epochs):  # the layer or probes changed: restart
                maps.pop(method, None)
        self._ready["current", method] = ready = (raw, self._prepare(raw, raw.device))
        for name, maps in stored.items():  # a stored map not prepared yet (after a load): prepared once, kept
            if method in maps and self._ready.get((name, method), (None,))[0] is not maps[method]:
                self._ready[name, method] = (maps[method], self._prepare(maps[method], raw.device))
        for name, maps in stored.items():
            for metric, values in (self.distances(raw, maps[method]) if method in maps else {}).items():
                key, d = f"{metric}_vs_{name}", values.numpy().astype(np.float64)
                result.per_probe[key] = values
                result.statistics[f"{key}/median"] = _median(d)  # torch.quantile(d, 0.5) in float32, bit for bit
                result.statistics[f"{key}/share"] = float((d > self.probe_threshold).mean())
        self._last.pop(method, None)
        if "rank_vs_reference" in result.per_probe:  # the sheet's per-probe drift (not at the reference itself)
            self._last[method] = (given, result.per_probe["rank_vs_reference"])
        # the pinned epoch, or the first evaluated after it (a skipped method); else the end of the warm-up
        first = self.warmup_epochs if self.reference_epoch is None else self.reference_epoch
        compared = method in self.reference  # measured against a reference stored at an earlier evaluation
        if not compared and epoch >= first:
            self.reference[method], self.reference_epochs[method] = raw.cpu().clone(), epoch
            self._ready["reference", method] = (self.reference[method], ready[1])
            for metric in ("rank", "topk"):  # the reference itself: zero drift, logged for continuity
                result.per_probe[f"{metric}_vs_reference"] = torch.zeros(raw.shape[0])
                result.statistics.update({f"{metric}_vs_reference/median": 0.0, f"{metric}_vs_reference/share": 0.0})
        # rules apply from the evaluation after the reference's (the same epoch's next one with val_check_interval),
        # never inside the warm-up (a pinned reference_epoch may lie in it)
        after = compared and epoch >= self.reference_epochs.get(method, epoch)
        result.alerts_armed = after and epoch >= self.warmup_epochs
        self.previous[method] = raw.cpu().clone()
        self._ready["previous", method] = (self.previous[method], self._ready.pop(("current", method))[1])
        return result

    def reference_drift(self, method: str, raw: Tensor) -> Tensor | None:
        """The per-probe rank drift against the reference that :meth:`update` measured for ``raw`` (the same tensor
        object it was given), or None (not measured: compare with :meth:`distances`)."""
        last = self._last.get(method)
        return last[1] if last is not None and last[0] is raw else None

    def __getstate__(self) -> dict[str, Any]:  # pickled (ddp_spawn) without the comparison cache
        return {**self.__dict__, "_ready": {}, "_last": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"_last": {}, **state})

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
        self._ready, self._last = {}, {}  # prepared again from the loaded maps when first compared


def _compare(cur: _Prepared, ref: _Prepared) -> dict[str, Tensor]:
    """Per-probe rank and top-k drift of two prepared maps, float32 CPU tensors (NaN where either map holds NaN)."""
    found = {
        "rank": functional._spearman_from_ranks((cur.ranks, cur.constant), (ref.ranks, ref.constant)),
        "topk": functional._iou_distance(cur.top, ref.top),
    }
    return {metric: functional._finish(d, cur.nan | ref.nan, torch.device("cpu")) for metric, d in found.items()}


def _median(values: np.ndarray) -> float:
    """``float(torch.quantile(torch.from_numpy(values), 0.5).float())`` of a 1-D float64 array, without torch: NaN if
    any value is NaN, else the lower middle value lerped towards the upper one as ``torch.lerp`` does."""
    if np.isnan(values.sum()):
        return math.nan
    ordered = np.sort(values)
    rank = 0.5 * (len(ordered) - 1)
    low, high = ordered[int(rank)], ordered[math.ceil(rank)]
    weight = rank - int(rank)
    value = low + weight * (high - low) if weight < 0.5 else high - (high - low) * (1 - weight)
    return float(np.float32(value))
