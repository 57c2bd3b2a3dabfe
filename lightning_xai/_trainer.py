"""What the monitor reads from and does to the Trainer: whether its strategy lets one rank run the whole model, where
probes come from when none are given, the training batch size that bounds Integrated Gradients' chunks, decisions
every rank takes together, the keys it logs, and when ``on_drift`` acts."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai import _warn
from lightning_xai._rng import isolated_rng
from lightning_xai.drift.alerts import DriftAlert, DriftDetectedError
from lightning_xai.explain.run import ProbeExplanations, isolated, merge_shards, to_cpu
from lightning_xai.probes import ProbeSet, collect_probes
from lightning_xai.visualize.writer import add_text_job

T = TypeVar("T")

NO_PROBES = (
    "AttributionMonitor: no probes (no `probes=` given and no validation or test dataloader found); nothing is "
    "explained."
)

#: strategies whose parameters are sharded across ranks: no rank holds the whole model to explain
SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


def check_strategy(strategy: Any) -> None:
    """Refuse, at setup, strategies whose parameters are sharded across ranks.

    Every rank explains its share of the probes with the full model, on its own (forward and backward through
    every layer, with hooks on one of them). Under FSDP, DeepSpeed or tensor/model parallelism no rank holds the
    whole model and every forward is a collective of all ranks, which the per-rank shares (of different sizes,
    with different IG step counts) would not keep in step: it would hang or explain garbage.

    Example::

        >>> from lightning.pytorch.strategies import SingleDeviceStrategy
        >>> check_strategy(SingleDeviceStrategy("cpu"))
    """
    names = {cls.__name__ for cls in type(strategy).__mro__}
    sharded = next((n for n in SHARDED_STRATEGIES if n in names), None)
    if sharded is not None:
        raise ValueError(
            f"AttributionMonitor does not support `strategy={type(strategy).__name__}`: {sharded} shards the "
            "parameters across ranks, so no single rank holds the whole model that Captum must run forward and "
            "backward through, and each forward needs every rank. Train with `strategy='ddp'` (or "
            "'ddp_spawn'/single device) to monitor, or explain saved checkpoints after training."
        )


def training_batch_size(loaders: Any) -> int | None:
    """The largest ``batch_size`` among the training dataloader(s) (a loader, or a list/dict of them); None when
    none declares one (an iterable, or a batch sampler without ``batch_size``).

    Example::

        >>> training_batch_size({"a": DataLoader(range(10), batch_size=4), "b": [DataLoader(range(4), batch_size=2)]})
        4
    """
    if isinstance(loaders, DataLoader):
        size = loaders.batch_size or getattr(loaders.batch_sampler, "batch_size", None)
        return int(size) if isinstance(size, int) and size > 0 else None
    children: list[Any] = []
    if isinstance(loaders, dict):
        children = list(loaders.values())
    elif isinstance(loaders, (list, tuple)):
        children = list(loaders)
    sizes = [s for s in (training_batch_size(c) for c in children) if s is not None]
    return max(sizes) if sizes else None


def first_loader(trainer: Trainer) -> Any:
    """The first validation dataloader (the first test dataloader under ``trainer.test``): a DataLoader or any other
    iterable of batches Lightning accepted; None when there is none."""
    loaders = trainer.test_dataloaders if trainer.state.fn == TrainerFn.TESTING else trainer.val_dataloaders
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)) and not _is_batch(loaders):
        loaders = loaders[0] if loaders else None
    return loaders


def _is_batch(value: Sequence[Any]) -> bool:
    """A list that is itself one batch (``(images, labels)``), not a list of loaders."""
    return bool(value) and isinstance(value[0], Tensor)


def ready_validation(trainer: Trainer) -> None:
    """Set up the validation dataloader now when Lightning has not yet (no sanity check and a first validation after
    the first epoch, e.g. ``num_sanity_val_steps=0`` with ``check_val_every_n_epoch=3``), as Lightning itself does
    when the first epoch validates, so that the probes and the setup check are ready before the first training step.
    The global RNGs are left as they were."""
    if trainer.state.fn != TrainerFn.FITTING or not trainer.enable_validation or trainer.val_dataloaders is not None:
        return
    stage = trainer.state.stage
    try:
        with isolated_rng():
            trainer.validating = True
            trainer.fit_loop.epoch_loop.val_loop.setup_data()
    finally:
        trainer.state.stage = stage


def batch_preparer(trainer: Trainer, pl_module: LightningModule, testing: bool) -> Callable[[Any], Any]:
    """What Lightning does to a validation (test) batch before ``validation_step`` sees it: the
    ``on_before_batch_transfer``, ``transfer_batch_to_device`` and ``on_after_batch_transfer`` hooks of the
    LightningModule (or the datamodule's, where it overrides them), run with the trainer in the validating (testing)
    stage."""
    datamodule = getattr(trainer, "datamodule", None)
    owner = (
        datamodule if datamodule is not None and is_overridden("on_before_batch_transfer", datamodule) else pl_module
    )
    stage = RunningStage.TESTING if testing else RunningStage.VALIDATING

    def prepare(batch: Any) -> Any:
        previous = trainer.state.stage
        trainer.state.stage = stage
        try:
            batch = owner.on_before_batch_transfer(batch, 0)
            return trainer.strategy.batch_to_device(batch, pl_module.device, dataloader_idx=0)
        finally:
            trainer.state.stage = previous

    return prepare


def trainer_probes(
    trainer: Trainer, pl_module: LightningModule, source: Any, num_probes: int, seed: int
) -> ProbeSet | None:
    """The probes from ``source`` (``probes=``), or drawn from the first validation (test) dataloader as the model
    receives them (its ``collate_fn`` and Lightning's batch hooks); None when there is neither. Warns when a drawn
    set holds fewer than ``num_probes`` images, and what was left out or converted."""
    if trainer.world_size > 1:  # every rank explains a share of the same probes: rank 0's
        return trainer.strategy.broadcast(
            _collect(trainer, pl_module, source, num_probes, seed) if trainer.is_global_zero else None
        )
    return _collect(trainer, pl_module, source, num_probes, seed)


def _collect(trainer: Trainer, pl_module: LightningModule, source: Any, num_probes: int, seed: int) -> ProbeSet | None:
    testing = trainer.state.fn == TrainerFn.TESTING
    drawn = source is None
    if drawn:
        source = first_loader(trainer)
        if source is None:
            return None
    name = "test dataloader" if testing else "validation dataloader"
    prepare = None if isinstance(source, Dataset) else batch_preparer(trainer, pl_module, testing)
    with torch.inference_mode(False), torch.no_grad():  # validate/test: keep probes normal (autograd-able) tensors
        probes = collect_probes(source, num_probes, seed, loader_name=name, prepare=prepare)
    for warning in probes.warnings:
        _warn.warn(f"AttributionMonitor: {warning}.")
    if probes.note:
        _warn.warn(
            f"AttributionMonitor: {probes.note}, so the probes are unlabeled (`target='label'` explains the predicted "
            "class). Pass `probes=(images, labels)` with one class per image, or `target=` explicitly."
        )
    if not isinstance(source, Tensor | tuple) and len(probes) < num_probes:
        _warn.warn(
            f"AttributionMonitor: `num_probes={num_probes}` but the {probes.source} holds only {len(probes)} usable "
            f"images; using those {len(probes)}."
        )
    return probes


def shard(count: int, world: int, rank: int) -> slice:
    """This rank's consecutive share of ``count`` probes (sizes within one of each other; empty when ``rank >=
    count``).

    Example::

        >>> [shard(5, 2, r) for r in range(2)]
        [slice(0, 3, None), slice(3, 5, None)]
    """
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def explain_shards(
    trainer: Trainer, count: int, explain: Callable[[slice], ProbeExplanations], device: torch.device
) -> Callable[[], ProbeExplanations]:
    """Every rank explains its share of the ``count`` probes (:func:`shard`); the shares travel to rank 0 through
    the strategy's ``broadcast`` (one per rank, CPU tensors) and are merged there in probe order (None on the other
    ranks). One process explains them all. When ``explain`` raises on any rank, every rank raises. Returns what
    gathers the evaluation on rank 0 (call it inside :func:`on_rank_zero`, so that a failure there reaches every
    rank too)."""
    if trainer.world_size == 1:
        done = explain(slice(0, count))
        return lambda: done
    started = time.perf_counter()
    mine = shard(count, trainer.world_size, trainer.global_rank)
    part, failure = _attempt(lambda: to_cpu(explain(mine))) if mine.stop > mine.start else (None, None)
    parts = [trainer.strategy.broadcast(part, src=r) for r in range(trainer.world_size)]
    _raise_failures(failure, dict(enumerate(parts)))

    def gather() -> ProbeExplanations:
        merged = merge_shards([p for p in parts if p is not None], device)
        merged.seconds = time.perf_counter() - started  # this rank's wall time, waiting for the slowest included
        return merged

    return gather


def on_rank_zero(trainer: Trainer, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, its result broadcast to every rank. A failure on rank 0 is broadcast too, so every rank
    raises instead of waiting in the broadcast."""
    result: Any
    result, failure = _attempt(fn) if trainer.is_global_zero else (None, None)
    if trainer.world_size > 1:
        result = trainer.strategy.broadcast(result, src=0)
    _raise_failures(failure, {0: result})
    return result


class _Failure:
    def __init__(self, message: str) -> None:
        self.message = message


def _attempt(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``(fn(), None)``, or ``(_Failure, the exception)`` when it raises: the failure travels to the other ranks in
    place of the result, and the caller re-raises the exception once they were told (:func:`_raise_failures`)."""
    try:
        return fn(), None
    except BaseException as err:  # noqa: BLE001 - re-raised by _raise_failures, after the other ranks were told
        return _Failure(f"{type(err).__name__}: {err}"), err


def _raise_failures(own: BaseException | None, received: dict[int, Any]) -> None:
    """Re-raise this rank's own failure, else fail for the first rank whose result (``rank -> value``) is one."""
    if own is not None:
        raise own
    for rank, value in received.items():
        if isinstance(value, _Failure):
            raise RuntimeError(f"AttributionMonitor failed on rank {rank}, so every rank stops: {value.message}")


def on_every_rank(trainer: Trainer, fn: Callable[[], T]) -> T:
    """``fn()`` on every rank; when it raises on any rank, it raises on every rank (the others with a
    ``RuntimeError`` pointing to it), so no rank trains on while another has stopped."""
    result: Any = None
    failure: Exception | None = None
    try:
        result = fn()
    except Exception as err:  # noqa: BLE001 - re-raised below, after the ranks agreed
        failure = err
    if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(failure is not None, all=False):
        if failure is None:
            raise RuntimeError("AttributionMonitor's setup check failed on another rank; see that rank's error.")
    if failure is not None:
        raise failure
    return result


def check_unique_names(trainer: Trainer, monitor: Any) -> None:
    """Refuse a second monitor of the same ``name`` in one Trainer: both would log the same keys, and Lightning would
    average them into one value."""
    same = [cb for cb in trainer.callbacks if type(cb) is type(monitor) and cb.name == monitor.name]  # type: ignore[attr-defined]
    if len(same) > 1:
        raise ValueError(
            f"This Trainer has {len(same)} AttributionMonitors with `name={monitor.name!r}`: they would log the same "
            "keys, which Lightning averages into one value. Give each its own `name=` (keys become "
            "xai/<name>/...), e.g. `AttributionMonitor(name='gradcam_run')`."
        )


def prefixed(key: str, name: str | None) -> str:
    """``xai/<name>/...`` for a named monitor's key; the key itself without a name.

    Example::

        >>> prefixed("xai/gradcam/drift/rank_vs_reference/median", "val"), prefixed("xai/seconds", None)
        ('xai/val/gradcam/drift/rank_vs_reference/median', 'xai/seconds')
    """
    if name is None:
        return key
    return f"xai/{name}/{key[4:]}" if key.startswith("xai/") else f"{name}/{key}"


def warn_other_state(checkpoint: dict[str, Any], prefix: str, state_key: str) -> None:
    """Say so when a checkpoint holds monitor state under other settings: Lightning would skip it silently and the
    run would start a new reference and history."""
    keys = [str(k) for k in checkpoint.get("callbacks", {}) if str(k).startswith(prefix)]
    if keys and state_key not in keys:
        _warn.warn(
            f"AttributionMonitor: the checkpoint holds monitor state for {keys} but this monitor is {state_key}, so "
            "its probes, reference, history and alerts start afresh. Resume with the same methods (and their layer, "
            "ig_steps, ig_baseline), probes and target to keep them."
        )


def log_epoch_scalars(
    trainer: Trainer, pl_module: LightningModule, scalars: dict[str, float], name: str | None = None
) -> None:
    """Log epoch-level scalars through ``pl_module.log`` (so every logger, ``EarlyStopping`` and
    ``ModelCheckpoint`` see them), under ``xai/<name>/...`` for a named monitor. They are identical on every rank
    already; under DDP a max-reduce keeps them exact (and is what Lightning expects of epoch-level logs)."""
    distributed = trainer.world_size > 1
    for key, value in scalars.items():
        pl_module.log(
            prefixed(key, name),
            value,
            on_step=False,
            on_epoch=True,
            sync_dist=distributed,
            reduce_fx="max" if distributed else "mean",
            add_dataloader_idx=False,
        )


def with_placeholders(
    scalars: dict[str, float], keys: Sequence[str], logged: Mapping[str, Any], name: str | None
) -> dict[str, float]:
    """``scalars`` plus 0.0 for each drift key (``keys``, found by the setup check) this run has not logged yet: before
    the reference epoch or at the first evaluation there is nothing to compare with (the maps against themselves: no
    drift), and ``ModelCheckpoint(monitor=<drift key>)``, which has no ``strict=False``, needs the key at its first
    check. Once a key has a value, ``trainer.callback_metrics`` keeps its last one.

    Example::

        >>> keys = ["xai/g/drift/rank_vs_previous/median", "xai/ig/drift/rank_vs_previous/median"]
        >>> with_placeholders({"xai/g/confidence_mean": 0.5}, keys, {}, None)  # ig failed: no placeholder
        {'xai/g/drift/rank_vs_previous/median': 0.0, 'xai/g/confidence_mean': 0.5}
    """
    explained = {k.split("/")[1] for k in scalars if k.count("/") > 1}  # a method that failed gets none
    missing = {k: 0.0 for k in keys if k not in scalars and prefixed(k, name) not in logged}
    return {**{k: v for k, v in missing.items() if k.split("/")[1] in explained}, **scalars}


def log_errors_text(trainer: Trainer, writer: Any, errors: list[str], step: int, name: str | None) -> None:
    """Queue ``xai/errors`` for every TensorBoard logger directly, when the evaluation's media could not be made."""
    if not trainer.is_global_zero or not errors:
        return
    try:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                writer.submit(add_text_job(logger.experiment, prefixed("xai/errors", name), "\n\n".join(errors), step))
    except Exception as err:  # noqa: BLE001 - reporting a failure must not fail
        _warn.warn(f"AttributionMonitor: could not log xai/errors either: {type(err).__name__}: {err}")


def log_media(
    trainer: Trainer, media: Any, args: tuple[Any, ...], record: Any, name: str | None, warn: Callable[[str, str], None]
) -> None:
    """``media.log(trainer, *args)``, isolated: a failure is warned once, added to ``record.errors`` and written as
    ``xai/errors`` directly; training goes on."""
    if isolated("logging images and tables", record.errors, warn, lambda: media.log(trainer, *args) or True) is None:
        log_errors_text(trainer, media.writer, record.errors, record.global_step, name)


class DriftActions:
    """What ``on_drift`` does with an evaluation's alerts, and when, on every rank alike.

    - ``"warn"``: one warning per alert.
    - ``"stop"``: warns; when any rank has an alert, ``trainer.should_stop`` is set at the end of the current
      training epoch (Lightning would otherwise stop right after a mid-epoch validation, e.g. with
      ``val_check_interval``), so training ends after this epoch, as documented.
    - ``"raise"``: warns and raises :class:`DriftDetectedError` at the end of the validation (test) run, after
      Lightning has logged the epoch's scalars, so the drift that raised reaches the loggers.
    - a callable: called with each alert. If it raises, the exception ends the run the same way as ``"raise"``
      (after the epoch's scalars are logged); it must then raise on every rank.
    """

    def __init__(self, on_drift: Any) -> None:
        self.on_drift = on_drift
        self.stop_pending = False
        self.pending: Exception | None = None

    def act(self, trainer: Trainer, alerts: list[DriftAlert]) -> None:
        for alert in alerts:
            if callable(self.on_drift):
                try:
                    self.on_drift(alert)
                except Exception as err:  # noqa: BLE001 - re-raised at the end of the validation run
                    self.pending = self.pending or err
                    break
            else:
                _warn.warn(f"AttributionMonitor: {alert.message}")
        if self.on_drift == "stop" and trainer.strategy.reduce_boolean_decision(bool(alerts), all=False):
            if trainer.state.fn == TrainerFn.FITTING:
                self.stop_pending = True
        if self.on_drift == "raise" and alerts:
            self.pending = self.pending or DriftDetectedError(alerts[0])

    def raise_pending(self) -> None:
        """At the end of a validation or test run: raise what ``"raise"`` or the callable left."""
        pending, self.pending = self.pending, None
        if pending is not None:
            raise pending

    def stop_if_pending(self, trainer: Trainer) -> None:
        """At the end of a training epoch: stop the run when ``"stop"`` decided so during it."""
        if self.stop_pending:
            self.stop_pending = False
            trainer.should_stop = True

    def __getstate__(self) -> dict[str, Any]:  # picklable for ddp_spawn (a pending exception is not state)
        return {"on_drift": self.on_drift, "stop_pending": False, "pending": None}


def training_change(trainer: Trainer, pl_module: LightningModule, watch: SetupWatch, cost: Any) -> str | None:
    """What changed how the model trains since the last evaluation of this fit (the trainable parameters, the
    optimizers, or IG's steps cut by ``max_overhead``), or None; never outside ``fit``."""
    if trainer.state.fn != TrainerFn.FITTING:
        return None
    setup, steps = watch.changed(trainer, pl_module), cost.take_step_change()
    return "; ".join(c for c in (setup, steps) if c) or None


class SetupWatch:
    """Notices when the user changes how the model trains between two evaluations: which parameters train
    (``requires_grad``, e.g. a backbone unfrozen by ``BackboneFinetuning``) or the optimizers and their parameter
    groups. Explanations then move by themselves (the maps of a frozen random backbone are no baseline for a trained
    one), so the detector measures that evaluation but neither calibrates on it nor alerts; the next evaluation is
    compared with the new maps. The signature holds counts only, so nothing identifies a resumed run as changed."""

    def __init__(self) -> None:
        self.signature: tuple[int, ...] | None = None

    @staticmethod
    def signature_of(trainer: Trainer, pl_module: LightningModule) -> tuple[int, ...]:
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        optimizers = getattr(trainer, "optimizers", [])
        groups = [len(group["params"]) for optimizer in optimizers for group in optimizer.param_groups]
        return (trainable, len(optimizers), *groups)

    def changed(self, trainer: Trainer, pl_module: LightningModule) -> str | None:
        """A description of the change since the last call (None when nothing changed, or on the first call)."""
        previous, self.signature = self.signature, self.signature_of(trainer, pl_module)
        if previous is None or previous == self.signature:
            return None
        return (
            f"trainable parameters {previous[0]:,} -> {self.signature[0]:,}, optimizer parameter groups "
            f"{list(previous[2:])} -> {list(self.signature[2:])}"
        )
