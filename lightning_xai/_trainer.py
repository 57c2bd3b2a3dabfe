"""What the monitor reads from and does to the Trainer besides probes and ranks: the training batch size, the keys
it logs, other monitors' checkpoint state, what ``on_drift`` does, and changes to how the model trains."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch.utils.data import DataLoader

from lightning_xai import _distributed, _warn
from lightning_xai.drift.alerts import DriftAlert, DriftDetectedError
from lightning_xai.drift.measure import monitored
from lightning_xai.explain.run import isolated
from lightning_xai.visualize.dashboard import named
from lightning_xai.visualize.loggers import write_summary
from lightning_xai.visualize.writer import add_text_job

NEW_RUN = (
    "AttributionMonitor: this fit trains another LightningModule than the one the monitor's run is of, without "
    "`ckpt_path`, so the monitor starts a run of its own: probes drawn again from this fit's validation data, a new "
    "drift reference; `monitor.history` and `monitor.alerts` now hold this run only. Keep one monitor per run to keep "
    "the earlier ones; to continue the earlier run (e.g. with a model from `load_from_checkpoint`), resume it with "
    "`trainer.fit(model, ckpt_path=...)`, which restores the monitor's state too."
)


def unreadable_state(err: Exception) -> str:
    """The warning for a checkpoint whose monitor state cannot be read (corrupted, or hand-edited)."""
    return (
        f"AttributionMonitor: the checkpoint's monitor state could not be read ({type(err).__name__}: {err}), so "
        "its probes, reference, history and alerts start afresh (a new reference); training resumes as saved."
    )


def saved_state(build: Callable[[], dict[str, Any]], warn: Callable[[str, str], None]) -> dict[str, Any]:
    """``build()``: the monitor's checkpoint state; if building it fails, said once and an empty state (a resume
    from it starts the monitor's run afresh), so that the monitor's own state never stops the user's checkpoint."""
    try:
        return build()
    except Exception as err:  # noqa: BLE001 - a checkpoint of the user's training must still be written
        warn(
            "unsaved_state",
            f"AttributionMonitor: its state could not be saved with the checkpoint ({type(err).__name__}: {err}), so "
            "a resume from this checkpoint starts the monitor's run afresh (new probes and reference); the training "
            "state is saved as usual.",
        )
        return {}


def training_batch_size(loaders: Any) -> int | None:
    """The largest ``batch_size`` among the training dataloader(s) (a loader, a list or dict of them), or None."""
    if isinstance(loaders, DataLoader):
        size = loaders.batch_size or getattr(loaders.batch_sampler, "batch_size", None)
        return int(size) if isinstance(size, int) and size > 0 else None
    children = loaders.values() if isinstance(loaders, dict) else loaders if isinstance(loaders, (list, tuple)) else ()
    return max(filter(None, map(training_batch_size, children)), default=None)


def resuming(trainer: Trainer) -> bool:
    """This fit restores a checkpoint (``fit(ckpt_path=...)``: loaded before ``on_fit_start``, its loops restored
    after it). A tuner's own restore (``BatchSizeFinder``, ``LearningRateFinder``) leaves ``trainer.ckpt_path`` set
    but nothing loaded: not a resume."""
    loaded = getattr(getattr(trainer, "_checkpoint_connector", None), "_loaded_checkpoint", None)  # Lightning's
    return bool(loaded) if isinstance(loaded, dict) else trainer.ckpt_path is not None


def check_unique_names(trainer: Trainer, monitor: Any) -> None:
    """Refuse two monitors of one ``name`` in a Trainer: Lightning would average their keys into one value."""
    same = [cb for cb in trainer.callbacks if type(cb) is type(monitor) and cb.name == monitor.name]  # type: ignore[attr-defined]
    if len(same) > 1:
        raise ValueError(
            f"This Trainer has {len(same)} AttributionMonitors with `name={monitor.name!r}`: they would log the same "
            "keys, which Lightning averages into one value. Give each its own `name=` (keys become "
            "xai/<name>/...), e.g. `AttributionMonitor(name='gradcam_run')`."
        )


def before_weight_swaps(trainer: Trainer, monitor: Any) -> None:
    """Move ``monitor`` before the first callback in ``trainer.callbacks`` that changes the weights at
    ``on_validation_epoch_end``, where the monitor explains: a ``WeightAveraging`` callback (``EMAWeightAveraging``,
    Lightning >= 2.6) validates with the averaged weights and swaps the training ones back there; ``ModelPruning(
    prune_on_train_epoch_end=False)`` prunes there. After them, the monitor would explain weights that validation
    (``val_loss``) did not use. A new list: Lightning's loop over the old one (``setup``) calls every callback once."""
    callbacks: list[Any] = trainer.callbacks  # type: ignore[attr-defined]
    changes = [i for i, cb in enumerate(callbacks) if _changes_weights_after_validation(cb)]
    mine = next((i for i, cb in enumerate(callbacks) if cb is monitor), None)
    if not changes or mine is None or mine < changes[0]:
        return
    order = [cb for cb in callbacks if cb is not monitor]
    order.insert(changes[0], monitor)
    trainer.callbacks = order  # type: ignore[attr-defined]
    rank_zero_info(
        f"AttributionMonitor: runs before {type(callbacks[changes[0]]).__name__} in the callbacks, so it explains "
        "the weights validation used (that callback changes them at the end of validation, where the monitor explains)."
    )


def _changes_weights_after_validation(callback: Any) -> bool:
    from lightning.pytorch import callbacks

    averaging = getattr(callbacks, "WeightAveraging", None)  # Lightning >= 2.6
    if averaging is not None and isinstance(callback, averaging):
        return True
    return isinstance(callback, callbacks.ModelPruning) and not getattr(callback, "_prune_on_train_epoch_end", True)


#: Lightning's advice, at the end of an evaluation on several ranks, to reduce a value logged without ``sync_dist``
#: (a pattern: ``{}`` is the key)
SYNC_ADVICE = r"It is recommended to use `self\.log\('{}'"


def _quiet_sync_advice(keys: Collection[str]) -> None:
    """Filter Lightning's advice to reduce ``keys`` across ranks (rank 0's values on every rank: nothing to reduce);
    exactly these keys, so a user's own key keeps its advice; a filter already in place is not added again (each
    addition makes Python show the warnings it had shown once again)."""
    present = {f[1].pattern for f in warnings.filters if f[0] == "ignore" and f[1] is not None}
    for pattern in (SYNC_ADVICE.format(re.escape(key)) for key in keys):
        if pattern not in present:
            warnings.filterwarnings("ignore", pattern, PossibleUserWarning)


#: the loggers whose ``log_metrics`` may run on the background writer (it already writes their media); any other
#: logger (``CSVLogger``: its rows are a list that its ``save()`` empties) gets them on the training thread
THREAD_SAFE_LOGGERS = ("TensorBoardLogger", "WandbLogger", "MLFlowLogger")
#: the loggers that keep each key as its own series: their `epoch` is Lightning's (a second point at a step otherwise)
SERIES_LOGGERS = ("TensorBoardLogger", "MLFlowLogger")


def log_epoch_scalars(
    trainer: Trainer,
    pl_module: LightningModule,
    scalars: dict[str, float],
    name: str | None = None,
    writer: Any = None,
    direct: Collection[str] = (),
) -> None:
    """Log an evaluation's scalars, as ``xai/<name>/...`` for a named monitor. The :func:`monitored` ones (what
    ``EarlyStopping``/``ModelCheckpoint`` may watch) reach ``trainer.callback_metrics``, which those callbacks read:
    through ``pl_module.log`` in ``validate``/``test`` (so the call returns them); inside a fit straight into that
    dict, as Lightning would put them there, and to the loggers with the rest (``pl_module.log`` costs about 0.27 ms a
    key, Lightning's own bookkeeping). Every rank logs rank 0's values, so none is reduced across ranks (each
    reduction was an ``all_reduce``; at the end of a ``ddp_spawn`` test one could abort the worker as it exited, see
    :func:`~lightning_xai._distributed.any_rank`). The others and those in ``direct`` (placeholders: the callbacks get
    theirs from :func:`hold_places`) go straight to every logger at the step Lightning logs them at (rank 0; queued on
    the background ``writer`` where the logger allows), as Lightning's ``LearningRateMonitor`` does."""
    watched = {named(key, name): value for key, value in scalars.items() if monitored(key) and key not in direct}
    rest = {named(key, name): float(value) for key, value in scalars.items() if not monitored(key) or key in direct}
    if watched and trainer.state.fn != TrainerFn.FITTING:
        if trainer.world_size > 1:  # the same on every rank: Lightning's advice to reduce them does not apply
            _quiet_sync_advice(watched)
        pl_module.log_dict(watched, on_step=False, on_epoch=True, add_dataloader_idx=False)
    elif watched:
        metrics = trainer.callback_metrics  # Lightning's own dict (kept through the fit, as its logged values are)
        metrics.update({key: torch.tensor(float(value)) for key, value in watched.items()})
        rest = {**{key: float(value) for key, value in watched.items()}, **rest}
    if rest and trainer.is_global_zero:
        log_to_loggers(trainer, rest, writer)


def log_to_loggers(trainer: Trainer, metrics: dict[str, float], writer: Any = None) -> None:
    """``logger.log_metrics(metrics, step)`` for every logger of ``trainer`` at the step Lightning logs the epoch's
    values at (``trainer.validate``/``test`` too), with its ``epoch`` as Lightning adds to them (a ``CSVLogger``'s
    rows, W&B's; not for :data:`SERIES_LOGGERS`); on ``writer`` for :data:`THREAD_SAFE_LOGGERS`. A failure is warned
    about, never raised."""
    step = int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step))  # Lightning's
    with_epoch = {**metrics, "epoch": trainer.current_epoch}
    for logger in trainer.loggers:  # TensorBoard, MLflow: `epoch` is Lightning's (its validation values bring it)
        kinds = {cls.__name__ for cls in type(logger).__mro__}
        job = partial(_log_metrics, logger, metrics if kinds.intersection(SERIES_LOGGERS) else with_epoch, step)
        if writer is not None and kinds.intersection(THREAD_SAFE_LOGGERS):
            writer.submit(job)
        else:
            try:
                job()
            except Exception as err:  # noqa: BLE001 - a logger's failure must not stop training
                _warn.report(f"AttributionMonitor: {type(logger).__name__} could not log the scalars: {err!r}")


def _log_metrics(logger: Logger, metrics: dict[str, float], step: int) -> None:
    """``logger.log_metrics``; for a plain ``TensorBoardLogger`` (no prefix, its own ``log_metrics``) the same
    values as one event instead of one per key (0.7 ms less for 21 keys)."""
    own = type(logger).log_metrics is TensorBoardLogger.log_metrics and not getattr(logger, "_prefix", "")
    if isinstance(logger, TensorBoardLogger) and own:
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=key, simple_value=value) for key, value in metrics.items()]
        write_summary(logger.experiment, Summary(value=values), step)
    else:
        logger.log_metrics(metrics, step=step)


def with_placeholders(
    scalars: dict[str, float],
    keys: Sequence[str],
    history: Sequence[Mapping[str, float]],
    logged: Mapping[str, Any],
    name: str | None = None,
    uncompared: Collection[str] = (),
) -> dict[str, float]:
    """``scalars`` plus, for each :func:`monitored` drift key of the setup check that a method that ran did not
    measure now: 0.0 while the run has never measured it (``history``: the earlier evaluations' scalars; no previous
    evaluation or reference yet), at every such evaluation; else its last measured value when the current Trainer's
    ``callback_metrics`` (``logged``) lacks it (a resumed run, a new Trainer: ``ModelCheckpoint(monitor=<drift key>)``
    has no ``strict=False``), and nothing when ``logged`` holds it (it keeps its last value, as Lightning's do). A
    method in ``uncompared`` (its maps were explained but not compared) gets none either: a point would read as a
    measurement (``callback_metrics`` gets its stand-in from :func:`hold_places`)."""
    explained = {k.split("/")[1] for k in scalars if k.count("/") > 1} - set(uncompared)  # a failed method: none
    added: dict[str, float] = {}
    for key in keys:
        if "/drift/" not in key or not monitored(key) or key in scalars or key.split("/")[1] not in explained:
            continue
        last = last_measured(history, key)
        if last is None:
            added[key] = 0.0
        elif named(key, name) not in logged:
            added[key] = float(last)
    return {**added, **scalars}


def last_measured(history: Sequence[Mapping[str, float]], key: str) -> float | None:
    """``key``'s value at the last evaluation of ``history`` that measured it, or None (never measured)."""
    return next((float(h[key]) for h in reversed(history) if key in h), None)


def hold_places(
    trainer: Trainer, keys: Sequence[str], history: Sequence[Mapping[str, float]], name: str | None = None
) -> None:
    """Each :func:`monitored` key of the setup check that the Trainer's ``callback_metrics`` lacks gets its last
    measured value (``history``), else :func:`placeholder`, there only (no logger gets a point it did not measure): at
    a validation the monitor does not explain (``every_n_epochs``, a budget skip, a method that failed), and for a
    detector's score before it is first measured. So ``EarlyStopping``/``ModelCheckpoint`` watching it find it at
    every validation, as they find it later (Lightning keeps ``callback_metrics`` through a fit)."""
    metrics = trainer.callback_metrics  # Lightning's own dict: what the callbacks read
    for key in filter(monitored, keys):
        if (shown := named(key, name)) not in metrics:
            last = last_measured(history, key)
            metrics[shown] = torch.tensor(placeholder(trainer, key, shown) if last is None else float(last))


def placeholder(trainer: Trainer, key: str, shown: str) -> float:
    """What stands for a monitored ``key`` (``shown`` as logged) never measured: for what watches it (callbacks with
    a ``monitor`` and a ``mode``, ``ReduceLROnPlateau`` schedulers), the worst value it can take (``mode="max"``: its
    lowest, ``"min"``: its highest) short of an ``EarlyStopping``'s ``divergence_threshold``, so it neither wins a
    checkpoint or an improvement nor stops the run; 0.0 when nothing watches it or the watchers disagree. A rank
    drift lies in [0, 2], a top-k drift in [0, 1], a detector's score (a mean share of moved relevance) in [-1, 1]."""
    low, high = (-1.0, 1.0) if "/alert/" in key else (0.0, 2.0 if "/rank_vs_" in key else 1.0)
    callbacks = [cb for cb in getattr(trainer, "callbacks", []) if _is(getattr(cb, "monitor", None), shown)]
    configs = getattr(trainer, "lr_scheduler_configs", [])
    schedulers = [getattr(c, "scheduler", None) for c in configs if _is(getattr(c, "monitor", None), shown)]
    watching = [w for w in (*callbacks, *schedulers) if hasattr(w, "mode")]
    modes = {str(getattr(w, "mode", "")) for w in watching}
    if len(modes) != 1 or (mode := modes.pop()) not in ("min", "max"):
        return 0.0
    value = high if mode == "min" else low
    for limit in (getattr(w, "divergence_threshold", None) for w in watching):
        if isinstance(limit, (int, float)):  # at the limit: not over it, so no divergence stop
            value = min(value, float(limit)) if mode == "min" else max(value, float(limit))
    return value


def _is(monitor: Any, shown: str) -> bool:
    """``monitor`` (any object a callback holds) names ``shown``."""
    return isinstance(monitor, str) and monitor == shown


def log_errors_text(trainer: Trainer, writer: Any, errors: list[str], step: int, name: str | None) -> None:
    """Queue ``xai/errors`` for every TensorBoard logger directly, when the evaluation's media could not be made."""
    if not trainer.is_global_zero or not errors:
        return
    try:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                writer.submit(add_text_job(logger.experiment, named("xai/errors", name), "\n\n".join(errors), step))
    except Exception as err:  # noqa: BLE001 - reporting a failure must not fail
        _warn.report(f"AttributionMonitor: could not log xai/errors either: {type(err).__name__}: {err}")


def log_media(
    trainer: Trainer, media: Any, args: tuple[Any, ...], record: Any, name: str | None, warn: Callable[[str, str], None]
) -> None:
    """``media.log(trainer, *args)``, isolated: a failure is warned once, added to ``record.errors`` and written as
    ``xai/errors`` directly."""
    if isolated("logging images and tables", record.errors, warn, lambda: media.log(trainer, *args) or True) is None:
        log_errors_text(trainer, media.writer, record.errors, record.global_step, name)


class DriftActions:
    """What ``on_drift`` does with an evaluation's alerts, on every rank alike: ``"warn"`` one warning per alert;
    ``"stop"`` warns and stops at the end of the training epoch; ``"raise"`` warns and raises
    :class:`DriftDetectedError` at the end of the validation (test) run, once Lightning logged the epoch's scalars; a
    callable gets each alert, and what it raises ends the run the same way."""

    def __init__(self, on_drift: Any) -> None:
        self.on_drift = on_drift
        self.stop_pending = False
        self.pending: Exception | None = None
        self.delivered = False  # a callable got an alert since the last ``raise_pending``: it may have raised

    def act(self, trainer: Trainer, alerts: list[DriftAlert]) -> None:
        """Every rank gets rank 0's ``alerts`` (its record is broadcast), so what they ask is the same on every rank:
        only a callable's own failure can differ between ranks (:meth:`raise_pending` asks the ranks then)."""
        self.delivered = self.delivered or (callable(self.on_drift) and bool(alerts))
        for alert in alerts:
            if callable(self.on_drift):
                try:
                    self.on_drift(alert)
                except Exception as err:  # noqa: BLE001 - re-raised at the end of the validation run
                    self.pending = self.pending or err
                    break
            else:  # with the model's own answer, when it was asked: the evidence a glance at the console needs
                asked, text = alert.follow, alert.message
                if asked is not None and asked.passed:
                    text = f"{text.rstrip('.')}; {asked.summary()}."
                _warn.warn(f"AttributionMonitor: {text}")
        stop = self.on_drift == "stop" and bool(alerts)
        self.stop_pending = self.stop_pending or (stop and trainer.state.fn == TrainerFn.FITTING)
        if self.on_drift == "raise" and alerts:
            self.pending = self.pending or DriftDetectedError(alerts[0])

    def raise_pending(self, trainer: Trainer, before: Callable[[], None]) -> None:
        """Raise what is pending, after ``before()`` (whose own failure would hide it: warned instead). With several
        ranks they first agree whether any rank raises (a callable may raise on one rank only, e.g. a
        ``rank_zero_only`` notifier that failed): then every rank runs ``before()`` (its barrier) and raises, instead
        of one rank waiting in the barrier while the others train on. They ask only when a callable got an alert: the
        same on every rank (a collective nobody needs, at the end of a ``ddp_spawn`` test, can abort the worker as it
        exits: :func:`~lightning_xai._distributed.any_rank`)."""
        pending, self.pending = self.pending, None
        raised, delivered, self.delivered = pending is not None, self.delivered, False
        if trainer.world_size > 1 and delivered:
            raised = _distributed.any_rank(trainer, raised)
        if raised:
            try:
                before()
            except Exception as err:  # noqa: BLE001 - the drift error is what the user must get
                _warn.report(f"AttributionMonitor: could not hand back the results before raising: {err!r}")
            raise pending or RuntimeError(
                "AttributionMonitor: `on_drift` raised on another rank, so every rank stops; see that rank's error."
            )

    def abandon(self) -> None:
        """The run ended in an exception (or Ctrl+C): a stop or raise pending for it is not the next fit's."""
        self.stop_pending, self.pending, self.delivered = False, None, False

    def stop_if_pending(self, trainer: Trainer) -> None:
        if self.stop_pending:
            self.stop_pending = False
            trainer.should_stop = True

    def __getstate__(self) -> dict[str, Any]:  # picklable for ddp_spawn (a pending exception is not state)
        return {"on_drift": self.on_drift, "stop_pending": False, "pending": None, "delivered": False}


class SetupWatch:
    """Notices when the trainable parameters or the optimizers' parameter groups change between two evaluations (e.g.
    ``BackboneFinetuning``): the maps then move by themselves, so the detector neither calibrates on that evaluation
    nor alerts. Counts only, so a resumed run is not seen as changed; checkpointed, so a resume sees a change at its
    first evaluation (``BackboneFinetuning`` unfreezing at the epoch it resumes at) as the uninterrupted run does."""

    def __init__(self) -> None:
        self.signature: tuple[int, ...] | None = None

    def state_dict(self) -> list[int] | None:
        return None if self.signature is None else list(self.signature)

    def load_state_dict(self, state: Any) -> None:
        """``state`` from :meth:`state_dict`; None (a checkpoint from before it was saved): unknown, as a new run's."""
        self.signature = None if state is None else tuple(int(count) for count in state)

    @staticmethod
    def signature_of(trainer: Trainer, pl_module: LightningModule) -> tuple[int, ...]:
        """The trainable parameters, the number of optimizers and the parameters in each of their groups."""
        optimizers = getattr(trainer, "optimizers", [])
        groups = [len(group["params"]) for optimizer in optimizers for group in optimizer.param_groups]
        return (sum(p.numel() for p in pl_module.parameters() if p.requires_grad), len(optimizers), *groups)

    def changed(self, trainer: Trainer, pl_module: LightningModule, cost: Any) -> str | None:
        """What changed how the model trains since the last evaluation of this fit (including IG's steps cut by
        ``max_overhead``, taken from ``cost``), or None; never outside ``fit``."""
        if trainer.state.fn != TrainerFn.FITTING:
            return None
        previous, now = self.signature, self.signature_of(trainer, pl_module)
        self.signature, setup = now, None
        if previous is not None and previous != now:
            setup = f"trainable parameters {previous[0]:,} -> {now[0]:,}, optimizer parameter groups "
            setup += f"{list(previous[2:])} -> {list(now[2:])}"
        return "; ".join(c for c in (setup, cost.take_step_change()) if c) or None
