"""Probes from the Trainer's first validation (test) loader, set up early, as the model receives its batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor

from lightning_xai import _warn
from lightning_xai._rng import isolated_rng
from lightning_xai.probes.collect import ProbeSet, collect_probes

NO_PROBES = (
    "AttributionMonitor: no probes (no `probes=` given and no validation or test dataloader found); nothing is "
    "explained."
)


def first_loader(trainer: Trainer) -> Any:
    """The first validation (under ``trainer.test``: test) dataloader or iterable of batches; None when none."""
    loaders = trainer.test_dataloaders if trainer.state.fn == TrainerFn.TESTING else trainer.val_dataloaders
    loaders = list(loaders.values()) if isinstance(loaders, dict) else loaders
    if isinstance(loaders, (list, tuple)) and not (loaders and isinstance(loaders[0], Tensor)):  # not one batch
        loaders = loaders[0] if loaders else None
    return loaders


#: what ``_EvaluationLoop.setup_data`` sets: put back after the probes are drawn
_SETUP_STATE = ("_combined_loader", "_max_batches", "_last_val_dl_reload_epoch", "_seen_batches_per_dataloader")


@contextmanager
def early_validation(trainer: Trainer) -> Iterator[None]:
    """The validation dataloader set up now (RNGs kept), for the probes, when Lightning would only at the first
    validation; afterwards its loop is put back as it was, so Lightning sets it up at its own time: its
    ``val_dataloader()`` call (and what it draws from the RNGs) and ``reload_dataloaders_every_n_epochs``'s count are
    as without the monitor. The user's ``val_dataloader()`` runs once more, here."""
    if trainer.state.fn != TrainerFn.FITTING or not trainer.enable_validation or trainer.val_dataloaders is not None:
        yield
        return
    loop = trainer.fit_loop.epoch_loop.val_loop
    kept = {key: getattr(loop, key) for key in _SETUP_STATE if hasattr(loop, key)}
    stage = trainer.state.stage
    try:
        with isolated_rng():
            trainer.validating = True
            loop.setup_data()
    finally:
        trainer.state.stage = stage
    try:
        yield
    finally:
        for key, value in kept.items():
            setattr(loop, key, value)


def batch_preparer(trainer: Trainer, pl_module: LightningModule, testing: bool) -> Callable[[Any], Any]:
    """What Lightning does to a validation (test) batch: precision conversion, then the batch transfer hooks."""
    datamodule = getattr(trainer, "datamodule", None)
    owner = (
        datamodule if datamodule is not None and is_overridden("on_before_batch_transfer", datamodule) else pl_module
    )
    stage = RunningStage.TESTING if testing else RunningStage.VALIDATING

    def prepare(batch: Any) -> Any:
        previous, trainer.state.stage = trainer.state.stage, stage
        try:  # the precision plugin first: e.g. bf16-true casts the inputs
            batch = owner.on_before_batch_transfer(trainer.precision_plugin.convert_input(batch), 0)
            return trainer.strategy.batch_to_device(batch, pl_module.device, dataloader_idx=0)
        finally:
            trainer.state.stage = previous

    return prepare


def trainer_probes(
    trainer: Trainer,
    pl_module: LightningModule,
    source: Any,
    num_probes: int,
    seed: int,
    warn_once: Callable[[str, str], None] | None = None,
) -> ProbeSet | None:
    """The probes from ``source`` or the first validation (test) dataloader (None: neither), warning what it says;
    why the probes are unlabeled through ``warn_once(key, message)`` under the key of the generic "no labels" note
    (:func:`~lightning_xai.probes.targets.resolve_targets`), which it replaces."""
    testing, given = trainer.state.fn == TrainerFn.TESTING, source is not None
    source = first_loader(trainer) if source is None else source
    if source is None:
        return None
    name = "test dataloader" if testing else "validation dataloader"
    prepare = batch_preparer(trainer, pl_module, testing)  # a Dataset's batches too: what the model would receive
    with torch.inference_mode(False), torch.no_grad():  # validate/test: keep probes normal (autograd-able) tensors
        probes = collect_probes(source, num_probes, seed, loader_name=name, prepare=prepare, given=given)
    for warning in probes.warnings:
        _warn.warn(f"AttributionMonitor: {warning}.")
    if (missing := probes.uncovered) and probes.labels is not None:  # the alert sees a cue only where a probe shows it
        covered = len(set(probes.labels.tolist()))
        shown = ", ".join(str(c) for c in missing[:10]) + (", ..." if len(missing) > 10 else "")
        rank_zero_info(
            f"AttributionMonitor: the {_warn.count(len(probes), 'probe')} cover{'s' if len(probes) == 1 else ''} "
            f"{_warn.count(covered, 'class', 'classes')} of the {name}; {'class' if len(missing) == 1 else 'classes'} "
            f"{shown} {'has' if len(missing) == 1 else 'have'} no probe, so what the model learns for "
            f"{'it' if len(missing) == 1 else 'them'} is not watched. `num_probes={covered + len(missing)}` gives "
            "every class one."
        )
    if probes.note:
        (warn_once or (lambda _key, message: _warn.warn(message)))(
            "target_fallback",
            f"AttributionMonitor: {probes.note}, so the probes are unlabeled (`target='label'` explains the predicted "
            "class). Pass `probes=(images, labels)` with one class per image, or `target=` explicitly (for a "
            "regression or multi-label model, the output to explain, e.g. `target=0`: the largest output may change "
            "from epoch to epoch, which reads as drift).",
        )
    if not isinstance(source, Tensor | tuple) and len(probes) < num_probes:
        _warn.warn(
            f"AttributionMonitor: `num_probes={num_probes}` but the {probes.source} holds only {len(probes)} usable "
            f"images; using those {len(probes)}."
        )
    return probes
