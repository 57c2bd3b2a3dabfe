"""What must not grow with the number of evaluations: the work of each checkpoint beyond the new evaluations, and
what one evaluation's scalars add to the history (in memory and in the checkpoint)."""

from __future__ import annotations

import pickle
from typing import Any

import lightning.pytorch as L
import pytest
from conftest import TinyCNN, loaders, trainer_kwargs

from lightning_xai import AttributionMonitor, IntegratedGradients
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
    monitor._history[10].errors.append("gradcam: a failure said later")  # an older record changed: converted again
    assert monitor.state_dict()["history"][10] == original(monitor._history[10])
    monitor._history = [_record(e) for e in range(3)]  # a new run (or a loaded state): its own records
    assert monitor.state_dict()["history"] == [original(r) for r in monitor._history]


def test_an_evaluation_adds_its_values_not_its_key_names_to_the_history(tmp_path: Any) -> None:
    """Each evaluation's scalars were keyed by strings of their own (f-strings): about 1.5 kB per evaluation in the
    checkpoint (and twice that in memory) where the values are 0.3 kB; keys shared by every evaluation are pickled
    once. Also after a resume from a checkpoint whose keys are not shared (an older version's)."""
    L.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(methods=("gradcam", IntegratedGradients(n_steps=4)))
    train, val = loaders()
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], max_epochs=5, limit_train_batches=1))
    trainer.fit(TinyCNN(), train, val)
    history = monitor.history
    assert len(history) == 5
    assert _shares_keys(history[-1], history[-2])
    saved = monitor.state_dict()["history"]
    per_evaluation = len(pickle.dumps(saved[1:])) - len(pickle.dumps(saved[1:2]))
    assert per_evaluation / 3 < 800, per_evaluation / 3
    older = [{**e, "scalars": {"".join(list(k)): v for k, v in e["scalars"].items()}} for e in saved]
    loaded = AttributionMonitor(methods=("gradcam", IntegratedGradients(n_steps=4)))
    loaded.load_state_dict({**monitor.state_dict(), "history": older})
    assert _shares_keys(loaded.history[-1], loaded.history[-2])


def _shares_keys(a: Evaluation, b: Evaluation) -> bool:
    """Whether every key of ``a`` that ``b`` has too is the same string object as ``b``'s."""
    earlier = {key: key for key in b.scalars}
    both = [key for key in a.scalars if key in earlier]
    return len(both) > 10 and all(key is earlier[key] for key in both)
