"""No silent no-ops (issue 20): a configuration in which the monitor never explains, never sets a reference or can
never alert is said once at setup, with what happens, why and the fix.

The pure functions of ``lightning_xai._schedule`` are tested on plain values; then one tiny ``Trainer.fit`` per case
checks that exactly that one warning comes out of a real fit (the values read from a real trainer).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TinyCNN, loaders, make_images, trainer_kwargs
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lightning_xai import AttributionMonitor, DriftPolicy
from lightning_xai._schedule import (
    MIN_DETECTOR_PROBES,
    MonitorSchedule,
    TrainerSchedule,
    evaluated_epochs,
    setup_warnings,
    trainer_schedule,
)
from lightning_xai.drift.detector import ShiftDetector, t_quantile

#: True once ``AttributionMonitor`` emits :func:`setup_warnings` itself (the lead wires it into ``monitor.py``); until
#: then the fit tests emit them from a helper callback that reads the same trainer at the same hook.
WIRED = True

T, M = TrainerSchedule, MonitorSchedule


def keys(trainer: TrainerSchedule, monitor: MonitorSchedule) -> list[str]:
    return [key for key, _ in setup_warnings(trainer, monitor)]


# ----------------------------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    ("max_epochs", "every", "validate", "expected"),
    [
        (10, 1, 1, list(range(10))),
        (10, 2, 1, [1, 3, 5, 7, 9]),
        (10, 1, 3, [2, 5, 8]),
        (20, 2, 3, [5, 11, 17]),  # both must hold: every 6th epoch
        (10, 4, 2, [3, 7]),  # every 2nd validation
        (10, 2, 4, [3, 7]),  # every validation (every_n_epochs has no effect)
        (5, 2, 3, []),
        (-1, 2, 3, list(range(5, 1000, 6))),  # no epoch limit: listed up to 1000
    ],
)
def test_evaluated_epochs_are_where_both_schedules_hold(
    max_epochs: int, every: int, validate: int, expected: list[int]
) -> None:
    assert evaluated_epochs(T(max_epochs=max_epochs, check_val_every_n_epoch=validate), every) == expected


def test_defaults_warn_nothing() -> None:
    assert keys(T(max_epochs=10), M(num_probes=8)) == []
    assert keys(T(max_epochs=-1), M(num_probes=8)) == []  # max_steps-bound runs: no epoch limit
    assert keys(T(max_epochs=1), M(num_probes=8)) == []  # one evaluation: nothing to compare in any case
    assert keys(T(max_epochs=10, check_val_every_n_epoch=2), M(every_n_epochs=4)) == []  # every 2nd validation
    assert keys(T(max_epochs=10, check_val_every_n_epoch=4), M(every_n_epochs=2)) == []  # every validation
    # validation by training steps across epochs: the validated epochs are not a pattern, nothing is claimed
    assert keys(T(max_epochs=10, check_val_every_n_epoch=None, val_check_interval=5), M(every_n_epochs=2)) == []


@pytest.mark.parametrize(
    ("trainer", "probes_given", "key", "why"),
    [
        (T(validation=False), False, "no_validation", r"this fit has no validation dataloader"),
        (T(validation=False), True, "probes_without_validation", r"no validation dataloader"),
        (T(validation=False, limit_val_batches=0), False, "no_validation", r"limit_val_batches=0"),
        (
            T(validation=False, validation_step=False, model="Net"),
            True,
            "probes_without_validation",
            r"Net has no `validation_step`",
        ),
    ],
    ids=["no-loader", "probes-no-loader", "limit-0", "probes-no-step"],
)
def test_no_validation_is_the_one_warning(trainer: TrainerSchedule, probes_given: bool, key: str, why: str) -> None:
    # every other setting would warn too (never evaluated, few probes): moot without validation, so not said
    found = setup_warnings(trainer, M(probes_given=probes_given, num_probes=2, every_n_epochs=5000))
    assert [k for k, _ in found] == [key]
    message = found[0][1]
    assert re.search(why, message) and "end of validation epochs" in message and "trainer.validate(" in message
    assert ("`probes=` are never explained" in message) == probes_given
    assert message.count(". ") <= 2  # what, why and the fix in at most two sentences


@pytest.mark.parametrize(
    ("trainer", "monitor", "first"),
    [
        (T(max_epochs=3), M(every_n_epochs=5), r"first after epoch 4 \(`every_n_epochs=5`"),
        (T(max_epochs=3, check_val_every_n_epoch=5), M(), r"Lightning validates first after epoch 4"),
        (T(max_epochs=5, check_val_every_n_epoch=3), M(every_n_epochs=2), r"multiple of 6.*the first being epoch 5"),
    ],
    ids=["every_n_epochs", "check_val_every_n_epoch", "both"],
)
def test_never_evaluated(trainer: TrainerSchedule, monitor: MonitorSchedule, first: str) -> None:
    found = setup_warnings(trainer, M(**{**monitor.__dict__, "num_probes": 2, "reference_epoch": 99}))
    assert [k for k, _ in found] == ["never_evaluated"]  # alone: the reference and the detector are moot
    assert re.search(first, found[0][1]) and "`max_epochs=" in found[0][1], found[0][1]


def test_every_n_epochs_with_check_val_every_n_epoch_says_which_epochs() -> None:
    (key, message), *rest = setup_warnings(T(max_epochs=20, check_val_every_n_epoch=3), M(every_n_epochs=2))
    assert key == "every_n_epochs_skips_validations" and not rest
    assert "validates after epochs 2, 5, 8, ..., 17" in message
    assert "after epochs 5, 11, 17 (every 6 epochs)" in message
    assert "every_n_epochs=1" in message and "every_n_epochs=6" in message
    unbounded = setup_warnings(T(max_epochs=-1, check_val_every_n_epoch=3), M(every_n_epochs=2))[0][1]
    assert "after epochs 5, 11, 17, ... (every 6 epochs)" in unbounded


@pytest.mark.parametrize(
    ("monitor", "key", "what"),
    [
        (M(every_n_epochs=2, reference_epoch=10), "reference_epoch_unreachable", r"is after every epoch .*1, 3, 5, 7"),
        (M(every_n_epochs=2, reference_epoch=6), "reference_epoch_unreachable", r"sets the reference at epoch 7, the"),
        (M(warmup_epochs=8), "warmup_covers_run", r"is after every epoch the monitor explains \(0, 1, 2, \.\.\., 7"),
        (M(warmup_epochs=7), "warmup_covers_run", r"sets the reference at epoch 7, the last"),
    ],
    ids=["pinned-after", "pinned-last", "warmup-after", "warmup-last"],
)
def test_unreachable_reference(monitor: MonitorSchedule, key: str, what: str) -> None:
    found = setup_warnings(T(max_epochs=8), monitor)
    assert [k for k, _ in found] == [key]
    assert re.search(what, found[0][1]), found[0][1]
    assert re.search(r"e\.g\. DriftPolicy\((reference_epoch=5|warmup_epochs=6)\)", found[0][1]), found[0][1]


def test_reachable_reference_is_silent() -> None:
    assert keys(T(max_epochs=8), M(every_n_epochs=2, reference_epoch=5)) == []  # compared at epoch 7
    assert keys(T(max_epochs=8), M(every_n_epochs=2, reference_epoch=4)) == []  # the next evaluated one: 5
    assert keys(T(max_epochs=8), M(warmup_epochs=6)) == []


def test_few_probes_minimum_is_the_detectors() -> None:
    # the real minimum: the threshold's t quantile has P - 1 degrees of freedom and is infinite below 3
    assert t_quantile(0.995, MIN_DETECTOR_PROBES - 1) < float("inf") == t_quantile(0.995, MIN_DETECTOR_PROBES - 2)
    threshold, _ = ShiftDetector().threshold([0.01, 0.02], standard_error=0.01, probes=MIN_DETECTOR_PROBES - 1)
    assert threshold == float("inf")
    assert keys(T(), M(num_probes=MIN_DETECTOR_PROBES)) == []
    assert keys(T(), M(num_probes=3, detector=False)) == []
    assert keys(T(), M(num_probes=None)) == []  # not known yet: nothing claimed
    (key, message), *_ = setup_warnings(T(), M(num_probes=3))
    assert key == "few_probes" and "3 probes are too few" in message and "nothing can alert" in message
    assert "num_probes=4" in message and "detector=None" in message
    assert "only the 2 DriftPolicy.rules can alert" in setup_warnings(T(), M(num_probes=1, drift_rules=2))[0][1]


# ------------------------------------------------------------------------------------------- one fit per case


class SetupWarnings(Callback):
    """What the monitor says before the first training step: :func:`setup_warnings` on the trainer's values and the
    monitor's settings once its probes are collected (emitted here until the monitor emits them itself, see
    ``WIRED``; this callback runs after the monitor's own ``on_train_start``)."""

    def __init__(self, monitor: AttributionMonitor) -> None:
        self.monitor = monitor
        self.found: list[tuple[str, str]] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        m = self.monitor
        settings = MonitorSchedule(
            every_n_epochs=m.every_n_epochs,
            reference_epoch=m.drift_tracker.reference_epoch,
            warmup_epochs=m.drift_tracker.warmup_epochs,
            probes_given=m.probe_source is not None,
            num_probes=None if m.probes is None else len(m.probes),
            detector=m.detector is not None,
            drift_rules=len(m.alert_tracker.rules),
        )
        self.found = setup_warnings(trainer_schedule(trainer), settings)
        for _, message in self.found if not WIRED else ():
            rank_zero_warn(message)


class NoValidationStep(TinyCNN):
    validation_step = LightningModule.validation_step  # type: ignore[assignment]  # not overridden


FIT_CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    # case: (monitor kwargs, trainer kwargs, how to fit)
    "no_validation": ({}, {}, {"val": False}),
    "probes_without_validation": ({"probes": make_images(4)}, {}, {"val": False}),
    "no_validation-limit": ({}, {"limit_val_batches": 0}, {}),
    "no_validation-step": ({}, {}, {"model": NoValidationStep}),
    "never_evaluated": ({"every_n_epochs": 3}, {"max_epochs": 2}, {}),
    "every_n_epochs_skips_validations": ({"every_n_epochs": 2}, {"max_epochs": 6, "check_val_every_n_epoch": 3}, {}),
    "reference_epoch_unreachable": ({"drift": DriftPolicy(reference_epoch=5)}, {"max_epochs": 2}, {}),
    "warmup_covers_run": ({}, {"max_epochs": 2}, {}),
    "few_probes": ({"probes": make_images(3)}, {"max_epochs": 1}, {}),
}


def fit_warnings(tmp_path: Any, monitor_kw: dict[str, Any], trainer_kw: dict[str, Any], how: dict[str, Any]) -> Any:
    L.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(methods=("gradcam",), **monitor_kw)
    probe = SetupWarnings(monitor)
    train, val = loaders(n_train=16, n_val=8)
    kw = {"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1, **trainer_kw}
    trainer = L.Trainer(callbacks=[monitor, probe], **trainer_kwargs(tmp_path, **kw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(how.get("model", TinyCNN)(), train, val if how.get("val", True) else None)
    return probe.found, [str(w.message) for w in caught], monitor


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_each_case_is_said_once_in_a_fit(tmp_path: Any, case: str) -> None:
    found, messages, _ = fit_warnings(tmp_path, *FIT_CASES[case])
    key = case.split("-")[0]
    assert [k for k, _ in found] == [key], found  # the trainer's values read back give exactly this case
    assert messages.count(found[0][1]) == 1, messages  # said once


def test_a_fit_without_a_silent_no_op_is_not_warned(tmp_path: Any) -> None:
    found, messages, monitor = fit_warnings(tmp_path, {"drift": DriftPolicy(warmup_epochs=0)}, {"max_epochs": 2}, {})
    assert found == [] and len(monitor.history) == 2
    assert not [m for m in messages if "never explain" in m or "does nothing" in m or "too few" in m], messages


def test_probes_counted_after_they_are_drawn(tmp_path: Any) -> None:
    # num_probes=8 from a validation set of 3 images: 3 probes, too few for the detector
    x, y = make_images(19)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:16], y[:16]), batch_size=8)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[16:], y[16:]), batch_size=8)
    monitor = AttributionMonitor(methods=("gradcam",))
    probe = SetupWarnings(monitor)
    trainer = L.Trainer(callbacks=[monitor, probe], **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(TinyCNN(), train, val)
    assert [k for k, _ in probe.found] == ["few_probes"] and "3 probes are too few" in probe.found[0][1]


class ReadSchedule(Callback):
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.schedule = trainer_schedule(trainer)


def test_trainer_values_are_read_from_public_attributes(tmp_path: Any) -> None:
    train, val = loaders(n_train=16, n_val=8)
    reader = ReadSchedule()
    kw = {"max_epochs": None, "max_steps": 2, "num_sanity_val_steps": -1, "check_val_every_n_epoch": None}
    trainer = L.Trainer(callbacks=[reader], **trainer_kwargs(tmp_path, val_check_interval=1, **kw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(TinyCNN(), train, val)
    read = reader.schedule
    assert (read.max_epochs, read.check_val_every_n_epoch, read.val_check_interval) == (-1, None, 1)
    assert read.validation
    assert read.model == "TinyCNN" and read.validation_step
    assert setup_warnings(read, MonitorSchedule(every_n_epochs=3, reference_epoch=50)) == []  # no epoch limit


def test_a_reference_in_the_last_epoch_is_compared_when_that_epoch_validates_again() -> None:
    """``val_check_interval=0.5`` validates twice an epoch: the reference set at the last epoch's first validation is
    compared at its second, so ``warmup_covers_run`` would be false; said once a validation per epoch."""
    assert keys(T(max_epochs=3), M()) == ["warmup_covers_run"]
    assert keys(T(max_epochs=3, val_check_interval=0.5), M()) == []
    assert keys(T(max_epochs=3, val_check_interval=0.5), M(reference_epoch=2)) == []
    assert keys(T(max_epochs=2, val_check_interval=0.5), M()) == ["warmup_covers_run"]  # no reference at all


def test_a_reference_pinned_inside_a_warm_up_that_outlasts_the_fit_is_said() -> None:
    """``reference_epoch=0`` is compared with, but the rules and the detector wait for ``warmup_epochs=5``: with
    ``max_epochs=3`` nothing can alert, which the unpinned warm-up already said."""
    assert keys(T(max_epochs=3), M(warmup_epochs=5, reference_epoch=0)) == ["warmup_covers_run"]
    message = dict(setup_warnings(T(max_epochs=3), M(warmup_epochs=5, reference_epoch=0)))["warmup_covers_run"]
    assert "pinned reference (epoch 0" in message and "DriftPolicy(warmup_epochs=2)" in message
    assert keys(T(max_epochs=6), M(warmup_epochs=5, reference_epoch=0)) == []
    assert keys(T(max_epochs=3, val_check_interval=0.5), M(warmup_epochs=2, reference_epoch=2)) == []


def test_a_whole_number_interval_validates_once_an_epoch_when_it_is_the_epochs_length() -> None:
    assert keys(T(max_epochs=3, val_check_interval=4, batches_per_epoch=4), M()) == ["warmup_covers_run"]
    assert keys(T(max_epochs=3, val_check_interval=2, batches_per_epoch=4), M()) == []
    assert keys(T(max_epochs=3, val_check_interval=4), M()) == []  # the epoch's length not known: not claimed
