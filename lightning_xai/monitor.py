"""The ``AttributionMonitor`` callback: it runs the pipeline probes → explain → drift → visualize from Lightning's
hooks."""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import Dataset
from typing_extensions import override

from lightning_xai import _distributed, _runs, _trainer, _warn
from lightning_xai._cost import CostReporter
from lightning_xai._follow import FollowCheck
from lightning_xai._schedule import MonitorSchedule, setup_warnings, trainer_schedule
from lightning_xai._setup_check import check_monitor
from lightning_xai.drift.alerts import AlertTracker, DriftAlert, DriftDetectedError
from lightning_xai.drift.detector import ShiftDetector
from lightning_xai.drift.measure import Evaluation, SavedHistory, measure
from lightning_xai.drift.tracker import DriftTracker
from lightning_xai.explain import Explainer
from lightning_xai.explain.forward import ModelForwardFn
from lightning_xai.explain.run import ProbeExplanations, explain_probes, isolated
from lightning_xai.explain.setup import DryRunReport
from lightning_xai.explain.threads import ThreadChoice, one_torch_thread
from lightning_xai.probes import ProbeSet, TargetSpec, from_trainer, resolve_masks, shard_target
from lightning_xai.probes.inputs import check_images
from lightning_xai.settings import Budget, Display, DriftPolicy, normalize_arguments, run_settings, state_key_parts
from lightning_xai.visualize.display import has_colour
from lightning_xai.visualize.log import MediaContext, MediaLogger
from lightning_xai.visualize.render import Denormalize
from lightning_xai.visualize.restart import mark_fit_start

__all__ = ["AttributionMonitor", "DriftDetectedError"]


class AttributionMonitor(Callback):
    r"""Explain a fixed set of probe images every validation epoch and watch the explanations drift.

    The methods (Captum) run on the training device in eval mode and float32 without touching the training state.
    The monitor logs an explanation sheet, a prediction table and its scalars to every logger, puts the drift
    medians and the detector's scores into ``trainer.callback_metrics`` (for ``EarlyStopping``/``ModelCheckpoint``),
    and alerts when the :class:`ShiftDetector` (or a :class:`DriftRule`) fires; the detector
    puts each candidate to the model (the transplant test) before it alerts.

    Args:
        probes: None (draw ``num_probes`` from the first validation dataloader, as the model receives them), a
            ``(N, C, H, W)`` tensor, an ``(images, labels)`` pair, a Dataset, a DataLoader or an iterable of batches.
        num_probes: how many probes to draw from a Dataset or the validation data (class-balanced).
        methods: method names (shorthand for their default instances; :func:`~lightning_xai.explain.method_names`)
            or :class:`~lightning_xai.Explainer` instances with their options, e.g.
            ``["gradcam", IntegratedGradients(n_steps=32)]``.
        target: ``"label"`` (unlabeled probes: ``"predicted"``, warned), ``"predicted"``, a class, one per probe.
        every_n_epochs: explain every n-th epoch (``(epoch + 1) % n == 0``).
        denormalize: ``(mean, std)`` (or the ``Normalize`` transform that holds them) or a callable mapping model
            inputs back to [0, 1] images, for display and for the reference input of IG, DeepLift, Occlusion and
            LIME left at ``baseline=None`` (black).
        forward_fn: ``forward_fn(pl_module, x)`` returns ``(N, num_classes)`` logits for probes ``x`` when
            ``pl_module(x)`` does not (extra arguments, another method, dict/tuple outputs).
        drift: what counts as drift and what to do about it (:class:`~lightning_xai.DriftPolicy`; None: defaults).
        display: what is shown (:class:`~lightning_xai.Display`; None: defaults).
        budget: what the monitor may cost (:class:`~lightning_xai.Budget`; None: no limit).
        seed: seed of the probe draw (the global RNGs are never used).
        name: prefixes every tag, key and file (``xai/<name>/...``) so that several monitors share a Trainer.

    Example::

        >>> import lightning.pytorch as L
        >>> from lightning.pytorch.loggers import TensorBoardLogger
        >>> monitor = AttributionMonitor(num_probes=8, methods=("gradcam", "integrated_gradients"))
        >>> trainer = L.Trainer(callbacks=[monitor], logger=TensorBoardLogger("logs"), max_epochs=5)
        >>> # trainer.fit(model, datamodule)  -> tensorboard --logdir logs
    """

    def __init__(
        self,
        probes: Tensor | tuple[Tensor, Tensor] | Dataset | Iterable[Any] | None = None,
        num_probes: int = 8,
        methods: Sequence[str | Explainer] = ("gradcam", "integrated_gradients"),
        target: TargetSpec = "label",
        every_n_epochs: int = 1,
        denormalize: Denormalize = None,
        forward_fn: ModelForwardFn | None = None,
        drift: DriftPolicy | None = None,
        display: Display | None = None,
        budget: Budget | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        a = normalize_arguments(locals())  # every argument converted or refused here, once
        self.name, self.probe_source, self.num_probes, self.seed = a["name"], a["probes"], a["num_probes"], a["seed"]
        self.target, self.every_n_epochs, self.forward_fn = a["target"], a["every_n_epochs"], a["forward_fn"]
        p: DriftPolicy = a["drift"]
        d: Display = a["display"]
        self.budget: Budget
        self.drift_policy, self.display, self.budget = p, d, a["budget"]
        self.explainers: list[Explainer] = a["explainers"]  # from the registry, with what depends on the run resolved
        self.actions = _trainer.DriftActions(p.on_drift)
        self.media = MediaLogger(
            d.colormap, a["denormalize"], d.log_heatmaps, d.background_logging, d.tile_size, d.log_grids
        )
        self._start_run()
        self.threads = ThreadChoice()  # one torch thread for the passes while other processes keep the cores busy
        self._spawn_return = _distributed.return_target()  # ddp_spawn, ddp_notebook: where rank 0 sends the results
        self._colour_of: Any = None  # the probes ``_colour`` was found for
        self._colour = False
        self.setup_check = DryRunReport()  # the last setup check: its cost, methods that cannot run, drift keys
        self._warned: set[str] = set()
        self._keep_run = False  # a checkpoint loaded by validate/test/predict does not replace this run's state
        self._saved_history = SavedHistory()
        self._state_key = self._generate_state_key(name=self.name, **state_key_parts(a))

    def _start_run(self) -> None:
        """The state of one training run, as a new monitor has it: no probes drawn, reference or history yet."""
        p = self.drift_policy
        self.drift_tracker = DriftTracker(p.warmup_epochs, p.reference_epoch, p.topk, p.probe_threshold)
        self.detector = ShiftDetector() if p.detector == "default" else copy.deepcopy(p.detector)  # own calibration
        self.alert_tracker = AlertTracker(list(p.rules), cooldown=p.cooldown)
        follows = self.detector is not None and getattr(self.detector, "follow", False)
        self.follow = FollowCheck(self.detector.alpha) if follows and self.detector is not None else None
        self.probes: ProbeSet | None = None
        self.masks: Tensor | None = None
        self._history: list[Evaluation] = []
        self.media.probes_logged = []
        self.cost = CostReporter(self.budget.max_overhead, self.explainers)
        self._run_of: weakref.ref[LightningModule] | None = None  # the model this run's history is of
        self.setup_watch = _trainer.SetupWatch()  # a new model's parameters are not a change of this run's setup
        self._prepared_for: LightningModule | None = None

    @property
    @override
    def state_key(self) -> str:
        """What the stored maps depend on (methods and settings, probes, target); the rest may change on resume."""
        return self._state_key

    @property
    def alerts(self) -> list[DriftAlert]:
        """Every alert of the run (checkpointed; after ``ddp_spawn``, rank 0's)."""
        self._receive()
        return self.alert_tracker.alerts

    @property
    def history(self) -> list[Evaluation]:
        """One :class:`~lightning_xai.drift.measure.Evaluation` per evaluation (checkpointed; rank 0's)."""
        self._receive()
        return self._history

    @property
    def evaluations(self) -> int:
        """How many evaluations ran (``len(history)``)."""
        return len(self.history)

    @override
    def state_dict(self) -> dict[str, Any]:
        return _trainer.saved_state(self._state, self._warn_once)  # its failure never stops the user's checkpoint

    def _state(self) -> dict[str, Any]:
        return {
            "probes": None if self.probes is None else self.probes.images.clone(),
            "labels": None if self.probes is None or self.probes.labels is None else self.probes.labels.clone(),
            "masks": None if self.masks is None else self.masks.clone(),
            "drift": self.drift_tracker.state_dict(),
            "detector": None if self.detector is None else self.detector.state_dict(),
            "alerts": self.alert_tracker.state_dict(),
            "history": self._saved_history(self.history),  # each evaluation converted once
            "probes_logged": self.media.probes_logged,
            "setup": self.setup_watch.state_dict(),  # how the model trained at the last evaluation
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._keep_run:
            self._keep_run = False
            return
        try:  # a corrupted state: said once, the run starts afresh (as for another monitor's state)
            self._load(state_dict)
        except Exception as err:  # noqa: BLE001 - the monitor's own state never stops the user's resume
            self._start_run()
            self._warn_once("unreadable_state", _trainer.unreadable_state(err))

    def _load(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("probes") is not None:
            probes = check_images(state_dict["probes"], "probes", "from the checkpoint")
            self.probes, self._prepared_for = ProbeSet(probes, state_dict.get("labels"), "checkpoint"), None
        self.masks = state_dict["masks"] if state_dict.get("masks") is not None else self.masks
        self.drift_tracker.load_state_dict(state_dict.get("drift", {}))
        if self.detector is not None and state_dict.get("detector") is not None:
            self.detector.load_state_dict(state_dict["detector"])
        self.alert_tracker.load_state_dict(state_dict.get("alerts", {}))
        self._history = [Evaluation.from_dict(e) for e in state_dict.get("history", [])]
        self.media.probes_logged = state_dict.get("probes_logged", [])
        self.setup_watch.load_state_dict(state_dict.get("setup"))

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # validate/test/predict(ckpt_path=...) keep this run; a resume without this monitor's state starts one
        _runs.restore_or_start(self, trainer, checkpoint)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        _distributed.check_strategy(trainer.strategy)
        _distributed.receive_in_worker(self, trainer)  # ddp_notebook: the results of the caller's earlier calls
        _trainer.check_unique_names(trainer, self)
        _trainer.before_weight_swaps(trainer, self)  # explain the weights validation uses
        if message := self.media.missing_logger_message(trainer):
            self._warn_once("no_tensorboard", message)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run_of = self._run_of() if self._run_of is not None else None
        if run_of is not None and run_of is not pl_module and not _trainer.resuming(trainer):
            self._start_run()  # another model trained afresh (a k-fold or sweep loop): a run of its own
            rank_zero_info(_trainer.NEW_RUN)
        self._run_of, self._prepared_for = weakref.ref(pl_module), None  # a setup check per fit: the model may change
        if trainer.limit_val_batches != 0:  # no validation: nothing to prepare (said at train start)
            self.prepare(trainer, pl_module)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        mark_fit_start(trainer, self.name)  # a resumed fit: the report leaves out the evaluations it does again
        if trainer.limit_val_batches != 0:
            with from_trainer.early_validation(trainer):  # the val loader, when Lightning sets it up only later
                self.prepare(trainer, pl_module)
            batch_size = _trainer.training_batch_size(trainer.train_dataloader)  # caps IG's passes
            self.cost.start(self.setup_check, batch_size)  # the dry run is charged to the budget
        tracker, count = self.drift_tracker, None if self.probes is None else len(self.probes)
        found = (self.probe_source is not None, count, self.detector is not None, len(self.alert_tracker.rules))
        schedule = MonitorSchedule(self.every_n_epochs, tracker.reference_epoch, tracker.warmup_epochs, *found)
        for key, message in setup_warnings(trainer_schedule(trainer), schedule):
            self._warn_once(key, message)  # what this fit's settings make the monitor miss, said once each

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.actions.stop_if_pending(trainer)

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.prepare(trainer, pl_module)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self._due(trainer):
            self._evaluate(trainer, pl_module)
        elif self.probes is not None:  # set up: the keys callbacks may watch exist at every validation
            _trainer.hold_places(trainer, self.setup_check.drift_keys, [h.scalars for h in self._history], self.name)

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.prepare(trainer, pl_module)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._evaluate(trainer, pl_module)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.media.flush()
        self.actions.raise_pending(trainer, lambda: _distributed.hand_back(self, trainer))

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # trainer.validate: the pictures are written when it returns
            self.media.flush()  # (in a fit the writer overlaps training; teardown flushes)
        self.actions.raise_pending(trainer, lambda: _distributed.hand_back(self, trainer))  # after Lightning's logging

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.media.close()  # flushed first; the writer thread never outlives a failed run
        self.actions.abandon()  # a stop or raise pending at Ctrl+C would end the next fit of the model

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.media.close()  # flushed first
        _distributed.end_of_run(self, trainer)  # fit, test, ...: the results sent, the ranks' collectives freed

    def _due(self, trainer: Trainer) -> bool:
        if trainer.state.fn != TrainerFn.FITTING:  # trainer.validate / test: always explain
            return True
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0
        return due and self.cost.allows(self._warn_once, trainer.strategy.broadcast)  # rank 0's clock decides

    def prepare(self, trainer: Trainer, pl_module: LightningModule) -> bool:
        """Collect the probes (once) and run the setup check on ``pl_module`` (once per fit) on every rank; False:
        no probes. Other callbacks that need the probes (:class:`~lightning_xai.SanityCheck`) may call it."""
        if self.probes is None:
            draw = (trainer, pl_module, self.probe_source, self.num_probes, self.seed, self._warn_once)  # rank 0 draws
            self.probes = _distributed.on_rank_zero(trainer, lambda: from_trainer.trainer_probes(*draw))
            if self.probes is None:
                return False
        if self.masks is None and self.display.probe_masks is not None:
            with torch.inference_mode(False):
                self.masks = resolve_masks(self.display.probe_masks, self.probes)
        if self._prepared_for is not pl_module:
            renders = bool(self.media.image_loggers(trainer))  # the run renders images: so does the dry run
            before = trainer.state.fn == TrainerFn.FITTING and trainer.global_step == 0 and not trainer.validating
            check = (self, pl_module, renders, before, self._warn_once)
            self.setup_check = _distributed.on_every_rank(trainer, lambda: check_monitor(*check))
            # a copy: bound to the model at validation
            self._prepared_for = None if self.setup_check.on_copy else pl_module
        return True

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Every rank explains its share; rank 0 gathers, measures and logs; its record is broadcast to every rank."""
        if not self.prepare(trainer, pl_module):
            self._warn_once("no_probes", from_trainer.NO_PROBES)
            return
        with self.media.writer.held():  # the pictures are composed after the scalars are logged
            self._explain_measure_log(trainer, pl_module)

    def _explain_measure_log(self, trainer: Trainer, pl_module: LightningModule) -> None:
        explain, count = (lambda part: self._explain(trainer, pl_module, part)), len(self.probes or ())
        gather = _distributed.explain_shards(trainer, count, explain, pl_module.device, self._warn_once)
        record = _distributed.on_rank_zero(trainer, lambda: self._measure_and_log(trainer, pl_module, gather()))
        if not trainer.is_global_zero:
            self.history.append(record)
            self.alert_tracker.alerts.extend(record.alerts)
        fitting = trainer.state.fn == TrainerFn.FITTING
        self.cost.after_evaluation(record, self._warn_once, self.budget.max_seconds_per_epoch, fitting)  # every rank
        keys = self.setup_check.drift_keys  # every documented drift key exists from the first evaluation on
        earlier = [h.scalars for h in self._history]
        logged = trainer.callback_metrics
        scalars = _trainer.with_placeholders(record.scalars, keys, earlier, logged, self.name, record.uncompared)
        never = {key for key in scalars if key not in record.scalars and _trainer.last_measured(earlier, key) is None}
        _trainer.log_epoch_scalars(trainer, pl_module, scalars, self.name, self.media.writer, direct=never)
        if missing := [key for key in keys if key not in record.scalars]:  # never measured, a score, a failed method
            _trainer.hold_places(trainer, missing, earlier, self.name)  # callback_metrics: a value that never wins
        self.actions.act(trainer, record.alerts)  # warn / stop / raise / callable, as docs/failures.md says

    def _explain(self, trainer: Trainer, pl_module: LightningModule, part: slice) -> ProbeExplanations:
        assert self.probes is not None
        labels = None if self.probes.labels is None else self.probes.labels[part]
        target, images = shard_target(self.target, part), self.probes.images[part]
        return explain_probes(
            *(pl_module, images, labels, self.explainers, target),
            forward_fn=self.forward_fn, max_seconds=self.budget.max_seconds_per_epoch, limits=self.cost.limits(),
            epoch=int(trainer.current_epoch), warn_once=self._warn_once, skip=self.setup_check.disabled,
            quality=self.display.quality, threads=self.threads, first=part.start,
        )  # fmt: skip

    def _measure_and_log(self, trainer: Trainer, pl_module: LightningModule, done: Any) -> Evaluation:
        """Measure drift and alerts on the gathered ``ProbeExplanations`` and queue the media (rank 0)."""
        assert self.probes is not None and done is not None
        epoch, step = int(trainer.current_epoch), int(trainer.global_step)
        masks = None if self.masks is None else self.masks.to(pl_module.device)
        errors = list(done.errors)
        state = (self.drift_tracker, self.detector, self.alert_tracker, masks, self._warn_once)
        change = self.setup_watch.changed(trainer, pl_module, self.cost)
        if self._colour_of is not self.probes:  # colour_share means something only for probes with colour
            self._colour_of, self._colour = self.probes, has_colour(self.probes.images, self.media.denormalize)
        verify = {}
        if self.follow is not None and self.follow.ready:  # a candidate is put to the model: what moved, its colour
            found = (pl_module, done.inputs, done.targets, self.forward_fn, self._warn_once)
            threads = self.threads.fastest(pl_module.device)  # its passes are the model's, not drift's small ops
            verify = {k: self.follow.verifier(*found, k == "colour", threads) for k in ("region", "colour")}
        measuring = (done, epoch, step, *state, change, self._colour, verify)
        with one_torch_thread(pl_module.device):  # many small ops: with 2 threads on busy cores they wait on each other
            measured = isolated("measuring drift", errors, self._warn_once, measure, *measuring)
            if self.follow is not None:  # the reference's weights, which later candidates are compared with
                self.follow.keep(pl_module, epoch, self.drift_tracker.reference_epochs.values())
        record = measured or Evaluation(epoch, step, errors=errors, explain_seconds=done.seconds)
        self.history.append(record)
        run = {"name": self.name, "target": str(self.target), "every_n_epochs": self.every_n_epochs}
        groups = (self.drift_policy, self.display, self.budget)
        settings = run_settings(self.explainers, self.media.denormalize, groups, **run, num_probes=len(self.probes))
        rules, localised = tuple(self.alert_tracker.rules), self.display.probe_masks is not None
        context = MediaContext(self.name, self.drift_tracker, rules, settings, localised)
        normalizations = {e.name: e.display_normalization for e in self.explainers}
        args = (done, self.probes.labels, record, normalizations, context)
        _trainer.log_media(trainer, self.media, args, record, self.name, self._warn_once)
        if not self.cost.reported:  # the info line after the first evaluation counts its pictures too
            self.media.writer.flush()
        return self.cost.stamped(record, self.media.writer, trainer.state.fn == TrainerFn.FITTING)  # its cost

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _warn.warn(message)

    def _receive(self) -> None:
        """After a ``ddp_spawn``/``ddp_notebook`` fit, in the main process: take rank 0's state (once)."""
        if (state := _distributed.receive_spawn_return(self.__dict__.get("_spawn_return"))) is not None:
            self.load_state_dict(state)

    def __getstate__(self) -> dict[str, Any]:
        user = {"forward_fn": self.forward_fn, "denormalize": self.media.denormalize, "methods": self.explainers}
        _distributed.check_spawn_arguments({**user, "drift": self.drift_policy, "display": self.display})
        self._receive()  # a second ddp_spawn fit starts from the first one's results
        _distributed.mark_spawn_return(self.__dict__)  # pickled for ddp_spawn's workers: rank 0 sends the results back
        return {**self.__dict__, "_prepared_for": None, "_run_of": None}
