"""What the monitor will (not) do in a fit, said once at setup: the silent no-ops of a configuration.

The monitor explains at the end of validation epochs where ``(epoch + 1) % every_n_epochs == 0`` (epochs from 0);
Lightning validates where ``(epoch + 1) % check_val_every_n_epoch == 0``: so after epochs ``k * lcm(n, c) - 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.utilities.model_helpers import is_overridden

#: the ShiftDetector's t-test across probes needs ``P - 1 >= 3`` degrees of freedom: below, it never alerts
MIN_DETECTOR_PROBES = 4
_SHOWN = 4  # epochs listed in a message before "..."


@dataclass(frozen=True)
class TrainerSchedule:
    """What the trainer says about validation in this fit (plain values, see :func:`trainer_schedule`)."""

    max_epochs: int | None = 1000  # None or -1: no limit (max_steps/max_time are not taken into account)
    check_val_every_n_epoch: int | None = 1  # None: validation by steps across epochs (epochs not known)
    val_check_interval: Any = 1.0
    validation: bool = True  # trainer.enable_validation
    validation_step: bool = True
    limit_val_batches: int | float = 1.0
    model: str = "the model"  # the LightningModule's class name, for messages
    batches_per_epoch: float | None = None  # trainer.num_training_batches (inf: an iterable; None: not known)


@dataclass(frozen=True)
class MonitorSchedule:
    """The monitor's settings that decide when it explains, sets its reference and may alert."""

    every_n_epochs: int = 1
    reference_epoch: int | None = None  # None: the first evaluated epoch >= warmup_epochs
    warmup_epochs: int = 2
    probes_given: bool = False  # `probes=` passed, not drawn from the validation data
    num_probes: int | None = None  # None: not collected yet
    detector: bool = True
    drift_rules: int = 0


def trainer_schedule(trainer: Trainer) -> TrainerSchedule:
    """Read a :class:`TrainerSchedule` from a trainer inside ``fit`` (from ``setup`` on), public attributes only."""
    module = trainer.lightning_module
    return TrainerSchedule(
        max_epochs=trainer.max_epochs,
        check_val_every_n_epoch=trainer.check_val_every_n_epoch,
        val_check_interval=trainer.val_check_interval,
        validation=bool(trainer.enable_validation),
        validation_step=is_overridden("validation_step", module),
        limit_val_batches=trainer.limit_val_batches,
        model=type(module).__name__,
        batches_per_epoch=getattr(trainer, "num_training_batches", None),
    )


def _epoch_limit(trainer: TrainerSchedule) -> int | None:
    return None if trainer.max_epochs is None or trainer.max_epochs < 0 else int(trainer.max_epochs)


def _validation_period(trainer: TrainerSchedule) -> int | None:
    """Lightning validates after every k-th epoch; None when that is not a fixed epoch pattern."""
    if trainer.check_val_every_n_epoch is None or not isinstance(trainer.val_check_interval, (int, float)):
        return None
    return int(trainer.check_val_every_n_epoch)


def evaluation_period(trainer: TrainerSchedule, every_n_epochs: int) -> int:
    """The monitor explains after epochs ``k * period - 1``: ``lcm(every_n_epochs, check_val_every_n_epoch)``."""
    validation = _validation_period(trainer)
    return every_n_epochs if validation is None else math.lcm(every_n_epochs, validation)


def evaluated_epochs(trainer: TrainerSchedule, every_n_epochs: int, limit: int = 1000) -> list[int]:
    """The epochs (from 0) after which the monitor explains, below ``max_epochs`` and ``limit``."""
    end = _epoch_limit(trainer)
    period = evaluation_period(trainer, every_n_epochs)
    return list(range(period - 1, limit if end is None else min(end, limit), period))


def _listed(epochs: list[int], bounded: bool) -> str:
    """``"5, 11, 17, ..."`` (an unbounded run), ``"5, 11, ..., 47"`` or ``"5, 11"``."""
    shown: list[Any] = epochs
    if len(epochs) > _SHOWN:
        shown = [*epochs[: _SHOWN - 1], "...", epochs[-1]] if bounded else epochs[: _SHOWN - 1]
    return ", ".join(map(str, shown)) + ("" if bounded else ", ...")


def setup_warnings(trainer: TrainerSchedule, monitor: MonitorSchedule) -> list[tuple[str, str]]:
    """The ``(key, message)`` warnings for a fit: what the monitor will silently not do with this configuration.

    Keys: ``no_validation`` / ``probes_without_validation`` or ``never_evaluated`` (alone: the rest is moot),
    ``every_n_epochs_skips_validations``, ``reference_epoch_unreachable`` or ``warmup_covers_run``, ``few_probes``."""
    if not trainer.validation:
        return [_no_validation(trainer, monitor)]
    if (never := _never_evaluated(trainer, monitor)) is not None:
        return [never]
    found = (_combination(trainer, monitor), _reference(trainer, monitor), _few_probes(monitor))
    return [w for w in found if w is not None]


def _no_validation(trainer: TrainerSchedule, monitor: MonitorSchedule) -> tuple[str, str]:
    if trainer.limit_val_batches == 0:
        why = f"`limit_val_batches={trainer.limit_val_batches}` disables validation"
        fix = "Let a few batches validate (e.g. `limit_val_batches=1`)"
    elif not trainer.validation_step:
        why = f"{trainer.model} has no `validation_step`, so Lightning skips validation"
        fix = "Add a `validation_step` (computing a loss is enough) and pass validation data"
    else:
        why = "this fit has no validation dataloader"
        fix = "Pass `val_dataloaders=` to `trainer.fit` (or define `val_dataloader()`; `limit_val_batches=1` is enough)"
    fix += ", or explain after training with `trainer.validate(model, dataloaders)`."
    if monitor.probes_given:
        key, what = "probes_without_validation", ": the given `probes=` are never explained in this fit: the monitor"
    else:
        key, what = "no_validation", " does nothing in this fit: it"
    return key, f"AttributionMonitor{what} explains at the end of validation epochs and {why}. {fix}"


def _never_evaluated(trainer: TrainerSchedule, monitor: MonitorSchedule) -> tuple[str, str] | None:
    end = _epoch_limit(trainer)
    if end is None or evaluated_epochs(trainer, monitor.every_n_epochs):
        return None
    n, validation = monitor.every_n_epochs, _validation_period(trainer)
    period = evaluation_period(trainer, n)
    if validation is not None and validation > 1 and n > 1:
        why = (
            f"it explains after epochs where both `every_n_epochs={n}` and `check_val_every_n_epoch={validation}` "
            f"hold (epoch + 1 a multiple of {period}, counted from 0), the first being epoch {period - 1}"
        )
        fix = f"Use every_n_epochs=1 (explain at every validation) and check_val_every_n_epoch <= {end}"
    elif validation is not None and validation > 1:
        why = f"Lightning validates first after epoch {validation - 1} (`check_val_every_n_epoch={validation}`)"
        fix = f"Use check_val_every_n_epoch <= {end}"
    else:
        why = f"it explains first after epoch {n - 1} (`every_n_epochs={n}`, epochs counted from 0)"
        fix = f"Use every_n_epochs <= {end}"
    return (
        "never_evaluated",
        f"AttributionMonitor never explains in this fit: {why}, and `max_epochs={end}` ends the fit before. {fix}, "
        "or train for more epochs.",
    )


def _combination(trainer: TrainerSchedule, monitor: MonitorSchedule) -> tuple[str, str] | None:
    n, validation = monitor.every_n_epochs, _validation_period(trainer)
    if validation is None or (period := math.lcm(n, validation)) == max(n, validation):  # one divides the other
        return None
    end = _epoch_limit(trainer)
    epochs = _listed(evaluated_epochs(trainer, n), end is not None)
    validated = _listed(list(range(validation - 1, min(end or 1000, 1000), validation)), end is not None)
    return (
        "every_n_epochs_skips_validations",
        f"AttributionMonitor: `every_n_epochs={n}` counts epochs, not validations: Lightning validates after epochs "
        f"{validated} (`check_val_every_n_epoch={validation}`, epochs from 0) and the monitor explains only where "
        f"both hold, after epochs {epochs} (every {period} epochs). Use every_n_epochs=1 to explain at every "
        f"validation, or a multiple of {validation} (e.g. every_n_epochs={2 * validation}: every 2nd validation).",
    )


def _reference(trainer: TrainerSchedule, monitor: MonitorSchedule) -> tuple[str, str] | None:
    end = _epoch_limit(trainer)
    if end is None:
        return None
    epochs = evaluated_epochs(trainer, monitor.every_n_epochs)
    pinned = monitor.reference_epoch is not None
    start = monitor.reference_epoch if monitor.reference_epoch is not None else monitor.warmup_epochs
    later = [e for e in epochs if e >= start]
    several = _several_per_epoch(trainer)  # the reference's epoch validates again after it
    if pinned and (len(later) > 1 or (later and several)):  # compared with the reference: armed after the warm-up?
        return _warmup_after_reference(
            later, several, monitor.warmup_epochs, f"{_listed(epochs, True)}, max_epochs={end}"
        )
    if len(later) > 1 or (not pinned and len(epochs) < 2):  # one evaluation in all: nothing to compare anyway
        return None
    if later and several:
        return None
    shown = f"{_listed(epochs, True)}, max_epochs={end}"
    if pinned:
        key, setting = "reference_epoch_unreachable", f"`DriftPolicy(reference_epoch={start})`"
        effect = "drift against the reference is never measured and no DriftRule can fire"
        fix = "Train"
        if len(epochs) > 1:
            fix = f"Pin an earlier evaluated epoch (e.g. DriftPolicy(reference_epoch={epochs[-2]})), or train"
    else:
        key, setting = "warmup_covers_run", f"`DriftPolicy(warmup_epochs={start})`"
        effect = "drift against the reference is never measured and nothing can alert"
        fix = f"Lower the warm-up (e.g. DriftPolicy(warmup_epochs={epochs[-2]})), or train"
    fix += " for more epochs"
    if later:
        what = f"sets the reference at epoch {later[0]}, the last one the monitor explains ({shown})"
        effect = effect.replace("never measured", "never measured after it")
    else:
        what = f"is after every epoch the monitor explains ({shown}), so no reference is set"
    return key, f"AttributionMonitor: {setting} {what}: {effect}. {fix}."


def _warmup_after_reference(later: list[int], several: bool, warmup: int, shown: str) -> tuple[str, str] | None:
    """A reference pinned inside the warm-up: compared with, but alerting waits for ``warmup``; said when no evaluation
    after the reference's (``later[0]``) reaches it."""
    compared = later[1:] + (later[:1] if several else [])
    if any(epoch >= warmup for epoch in compared):
        return None
    return (
        "warmup_covers_run",
        f"AttributionMonitor: `DriftPolicy(warmup_epochs={warmup})` covers every epoch the monitor explains after the "
        f"pinned reference (epoch {later[0]}; it explains {shown}): drift against the reference is measured, but the "
        f"detector and the rules ignore the warm-up, so nothing can alert. Lower the warm-up (e.g. "
        f"DriftPolicy(warmup_epochs={later[-1]})), or train for more epochs.",
    )


def _several_per_epoch(trainer: TrainerSchedule) -> bool:
    """Whether an epoch may hold several validations: ``val_check_interval`` a fraction under 1, or a number of
    batches under the epoch's (unknown: assumed so)."""
    interval, batches = trainer.val_check_interval, trainer.batches_per_epoch
    if isinstance(interval, float):
        return interval < 1.0
    return batches is None or interval < batches


def _few_probes(monitor: MonitorSchedule) -> tuple[str, str] | None:
    count = monitor.num_probes
    if not monitor.detector or count is None or count >= MIN_DETECTOR_PROBES:
        return None
    rules = "with no DriftPolicy.rules nothing can"
    if monitor.drift_rules:
        rules = f"only the {monitor.drift_rules} DriftPolicy.rules can"
    return (
        "few_probes",
        f"AttributionMonitor: {count} probe{' is' if count == 1 else 's are'} too few for the ShiftDetector: its "
        f"t-test across probes needs at least {MIN_DETECTOR_PROBES} (3 degrees of freedom) to tell a shared movement "
        f"from noise, so it never alerts and {rules} alert. Use num_probes={MIN_DETECTOR_PROBES} or more (8 by "
        "default; the validation data must hold that many), or DriftPolicy(detector=None) to turn it off.",
    )
