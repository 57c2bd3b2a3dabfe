"""What must not grow with the number of evaluations: the work of each checkpoint beyond the new evaluations."""

from __future__ import annotations

import pytest

from lightning_xai import AttributionMonitor
from lightning_xai.drift.measure import Evaluation

KEYS = [f"xai/{m}/drift/{d}_vs_{r}/{s}" for m in ("gradcam", "ig") for d in ("rank", "topk") for r in ("previous",
    "reference") for s in ("median", "share")]  # fmt: skip


def _record(epoch: int) -> Evaluation:
    scalars = {"".join(list(key)): 0.1 * epoch for key in KEYS}  # fresh strings, as measured
    return Evaluation(epoch, epoch + 1, scalars=scalars, explain_seconds=0.01)


def test_a_checkpoint_converts_only_the_evaluations_since_the_last_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """ModelCheckpoint saves every epoch (twice with save_last): converting the whole history each time made the
    monitor's share of a checkpoint grow with the epoch count (600 evaluations: 45 ms a save on 2 cores)."""
    monitor = AttributionMonitor()
    monitor._history = [_record(e) for e in range(200)]
    converted: list[int] = []
    original = Evaluation.to_dict
    monkeypatch.setattr(Evaluation, "to_dict", lambda self: converted.append(self.epoch) or original(self))
    first = monitor.state_dict()["history"]
    assert len(first) == 200 and first[57] == original(monitor._history[57])
    converted.clear()
    assert monitor.state_dict()["history"] == first
    assert len(converted) <= 1  # at most the newest evaluation, which its evaluation may still complete
    monitor._history.append(_record(200))
    monitor._history[-1].scalars["xai/skipped"] = 1.0  # completed after the first save: the save sees it
    converted.clear()
    again = monitor.state_dict()["history"]
    assert len(converted) <= 2 and again[-1] == original(monitor._history[-1]) and again[:-1] == first
    monitor._history = [_record(e) for e in range(3)]  # a new run (or a loaded state): its own records
    assert monitor.state_dict()["history"] == [original(r) for r in monitor._history]
