"""How the monitor speaks (issues 20 and 23): a failure it isolates is reported and skipped whatever the warning
filters are (``-W error``), and its warnings point at the user's line, not at package-internal paths."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor

from lightning_xai import AttributionMonitor, DriftPolicy
from lightning_xai.explain import Explainer, Explanation
from tests.conftest import TinyCNN, loaders, trainer_kwargs


class FailsLater(Explainer):
    """Works at the setup check (its first call), then raises at every evaluation."""

    def __init__(self) -> None:
        self.name, self.calls = "fails_later", 0

    def explain(self, forward: Any, inputs: Tensor, targets: Tensor) -> Explanation:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("boom")
        maps = torch.rand(inputs.shape[0], *inputs.shape[-2:])
        return Explanation(maps, maps.clone())


def test_a_method_failure_is_skipped_under_warnings_as_errors(tmp_path: Any, caplog: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=["gradcam", FailsLater()], drift=DriftPolicy(detector=None))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=2, callbacks=[monitor]))
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="lightning_xai"):
        warnings.simplefilter("ignore")  # Lightning's own warnings about this tiny setup
        warnings.filterwarnings("error", message="AttributionMonitor: .*(skipped|failed)")  # failure reports
        trainer.fit(TinyCNN(), *loaders())
    assert trainer.current_epoch == 2 and monitor.evaluations == 2
    assert all("fails_later skipped" in " ".join(e.errors) for e in monitor.history)
    assert "boom" in caplog.text  # reported on the logger instead of raising into training
    assert all(any(k.startswith("xai/gradcam/") for k in e.scalars) for e in monitor.history)  # the others ran


def test_warnings_point_at_the_users_line(tmp_path: Any) -> None:
    monitor = AttributionMonitor(num_probes=4, methods=["gradcam", FailsLater()], drift=DriftPolicy(detector=None))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, callbacks=[monitor]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyCNN(), *loaders())  # the line the monitor's warnings name
    ours = [w for w in caught if "AttributionMonitor" in str(w.message)]
    assert ours, [str(w.message) for w in caught]
    assert {w.filename for w in ours} == {__file__}, {(w.filename, w.lineno) for w in ours}


def test_a_small_run_with_nothing_wrong_prints_one_line(tmp_path: Any, caplog: Any) -> None:
    """Issue 23: one info line at the first evaluation (what it costs and where), nothing else."""
    from lightning.pytorch.loggers import TensorBoardLogger

    monitor = AttributionMonitor(num_probes=8)
    kwargs = trainer_kwargs(tmp_path, max_epochs=5, callbacks=[monitor], logger=TensorBoardLogger(str(tmp_path)))
    trainer = L.Trainer(**kwargs)
    info = caplog.at_level(logging.INFO, logger="lightning.pytorch")  # whatever other tests set it to
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO), info:
        warnings.simplefilter("always")
        trainer.fit(TinyCNN(), *loaders())
    said = [r.getMessage() for r in caplog.records if "AttributionMonitor" in r.getMessage()]
    said += [str(w.message) for w in caught if "AttributionMonitor" in str(w.message)]
    assert len(monitor.history) == 5 and len(said) == 1, said
    assert said[0].startswith("AttributionMonitor: an evaluation takes") and "gradcam on `features`" in said[0]


def test_failing_to_report_errors_does_not_raise_under_warnings_as_errors(caplog: Any) -> None:
    """Writing ``xai/errors`` itself fails: said on the logger, never raised into training."""
    from types import SimpleNamespace

    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_xai._trainer import log_errors_text

    class Broken:
        def submit(self, job: Any) -> None:
            raise OSError("disk full (simulated)")

    logger = TensorBoardLogger("unused")
    logger._experiment = object()  # no event file is opened
    trainer = SimpleNamespace(is_global_zero=True, loggers=[logger])
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="lightning_xai"):
        warnings.simplefilter("error")
        log_errors_text(trainer, Broken(), ["gradcam failed"], 0, None)  # type: ignore[arg-type]
    assert "could not log xai/errors either: OSError: disk full" in caplog.text


def test_lightnings_advice_to_reduce_is_filtered_for_the_monitors_keys_only() -> None:
    """Under DDP the monitored keys hold rank 0's values on every rank, so Lightning's advice to log them with
    ``sync_dist`` is filtered; the filter named every ``xai/...`` key (a user's own too) and was added again at every
    evaluation (review). Now exactly the monitor's keys, once each."""
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    from lightning_xai._trainer import _quiet_sync_advice

    def advice(key: str) -> str:
        return f"It is recommended to use `self.log('{key}', ..., sync_dist=True)` when logging on epoch level in ..."

    mine = "xai/gradcam/drift/rank_vs_reference/median"
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        _quiet_sync_advice([mine])
        count = len(warnings.filters)
        _quiet_sync_advice([mine])
        assert len(warnings.filters) == count  # not added again
        for key in (mine, "xai/my_own_metric", mine + "_x"):
            warnings.warn(advice(key), PossibleUserWarning, stacklevel=1)
    assert [str(w.message) for w in said] == [advice("xai/my_own_metric"), advice(mine + "_x")]
