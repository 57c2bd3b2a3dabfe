"""The ``AttributionMonitor`` callback: explain fixed probes every validation epoch, log, measure drift, alert."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset
from typing_extensions import override

from lightning_xai._state_key import explainer_key, source_key, target_key
from lightning_xai._trainer import SHARDED_STRATEGIES, check_strategy, first_loader, training_batch_size
from lightning_xai.drift.alerts import AlertTracker, DriftAlert, DriftRule
from lightning_xai.drift.tracker import DriftResult, DriftTracker
from lightning_xai.explain import METHODS, Explainer, IntegratedGradients
from lightning_xai.explain.forward import ModelForwardFn, model_forward
from lightning_xai.explain.gradcam import GradcamReshape
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.registry import build_explainers
from lightning_xai.explain.run import ProbeExplanations, explain_probes
from lightning_xai.functional import pointing_game, relevance_mass
from lightning_xai.probes.collect import ProbeSet, ProbeSource, collect_probes, resolve_masks
from lightning_xai.probes.targets import TargetSpec, check_target
from lightning_xai.visualize.media import image_grids, text_records
from lightning_xai.visualize.render import Denormalize, check_colormap, check_denormalize
from lightning_xai.visualize.writer import BackgroundWriter, add_image_job, add_text_job

__all__ = [
    "SHARDED_STRATEGIES",
    "AttributionMonitor",
    "DriftDetectedError",
    "OnDrift",
    "check_strategy",
    "training_batch_size",
]

OnDrift = str | Callable[[DriftAlert], None]
ON_DRIFT_ACTIONS = ("warn", "stop", "raise")


class DriftDetectedError(RuntimeError):
    """Raised by ``on_drift="raise"``; carries the :class:`DriftAlert`."""

    def __init__(self, alert: DriftAlert) -> None:
        super().__init__(alert.message)
        self.alert = alert


class AttributionMonitor(Callback):
    r"""Explain a fixed set of probe images every validation epoch and watch the explanations drift.

    At the end of each evaluated validation epoch the monitor runs Grad-CAM and/or Integrated Gradients
    (Captum) on the probes, on the training device, in eval mode and float32, without touching the training
    state (gradients, RNG streams, mode flags, BatchNorm buffers, hooks). It logs overlay grids and a
    prediction table to every :class:`~lightning.pytorch.loggers.TensorBoardLogger`, drift scalars through
    ``pl_module.log`` (so ``EarlyStopping``/``ModelCheckpoint`` can monitor them), and raises alerts when
    a :class:`DriftRule` fires.

    Args:
        probes: None (draw ``num_probes`` from the first validation dataloader), a ``(N, C, H, W)`` tensor,
            an ``(images, labels)`` pair, or a map-style Dataset yielding ``(image, label)``.
        num_probes: how many probes to draw from a Dataset or the validation data (class-balanced).
        methods: names from ``("gradcam", "integrated_gradients")`` (aliases ``"grad_cam"``, ``"ig"``) or
            :class:`~lightning_xai.explain.Explainer` instances.
        target: ``"label"``, ``"predicted"``, an int class, or one class per probe. ``"label"`` with
            unlabeled probes falls back to ``"predicted"`` with a warning.
        gradcam_layer: dotted module name or module; None picks the last spatial 4-D feature map (for a
            torchvision/timm-style ViT: the first LayerNorm of the last encoder block).
        gradcam_reshape: a callable mapping the Grad-CAM layer's output to ``(B, C, h, w)``. None: 4-D maps
            are used as they are, and ``(B, tokens, C)`` transformer outputs are reshaped automatically when
            the tokens form a patch grid (class token dropped). Must be picklable for ``ddp_spawn``.
        ig_steps: Integrated Gradients quadrature steps, or ``"auto"`` (default): the fewest Gauss–Legendre steps
            whose completeness gap is within 5 % (calibrated on the first evaluation, re-checked every evaluation,
            logged as ``xai/integrated_gradients/n_steps``). An int fixes the cost at ``P x ig_steps`` passes.
        ig_baseline: None (zeros in the model's input space — black only for unnormalised inputs), a float, or
            a tensor broadcastable to one probe.
        ig_internal_batch_size: samples per IG pass; None measures the throughput knee, capped at the training
            batch size (so IG never holds more activations than a training step).
        every_n_epochs: explain every n-th epoch (``(epoch + 1) % n == 0``).
        on_drift: ``"warn"``, ``"stop"`` (``trainer.should_stop`` on every rank), ``"raise"``
            (:class:`DriftDetectedError`) or a callable receiving each :class:`DriftAlert` (on every rank).
        denormalize: ``(mean, std)`` or a callable mapping model inputs back to [0, 1] images for display.
        seed: seed of the probe draw (the global RNGs are never used).
        warmup_epochs: epochs ignored by the alert rules; the reference is the first evaluated epoch
            ``>= warmup_epochs``.
        reference_epoch: pin the reference to this epoch instead (or the first evaluated epoch after it, for a
            method that did not run or was cut by the time budget then).
        drift_rules: the alert rules (default: median rank drift vs the reference ``>= 0.4``).
        probe_threshold: a probe "drifted" when its own drift is above this (``share`` statistics and
            ``DriftAlert.probe_indices``).
        topk: fraction of most-attributed cells compared by the ``topk`` metric.
        colormap: ``"jet"``, ``"viridis"``, ``"inferno"`` or ``"turbo"``.
        log_heatmaps: also log the bare heatmaps (``xai/<method>/heatmap``).
        output_transform: maps the model's output to ``(N, num_classes)`` logits (for dict/tuple outputs).
        forward_fn: ``forward_fn(pl_module, x)`` calls the model on a batch of probes when ``pl_module(x)``
            is not enough (a forward that needs extra arguments, or another method); its output then goes
            through ``output_transform``.
        probe_masks: ground-truth regions, one boolean ``(H, W)`` mask per probe as a ``(N, H, W)`` tensor, or a
            callable ``(images, labels) -> masks`` (labels may be None). Adds ``xai/localization/<method>/
            relevance_mass`` (share of |attribution| inside the mask) and ``.../pointing_game`` (share of probes
            whose most attributed pixel lies inside it).
        background_logging: encode PNGs and write events on a background thread.
        max_seconds_per_epoch: a time budget for one evaluation (prediction pass and every method, in the
            order of ``methods``). A method that accepts a budget (Integrated Gradients) gets the time left and
            cuts its steps to fit (``xai/<method>/budget_limited`` = 1); a method with no time left is skipped
            for that epoch and named under ``xai/errors``. None: no budget. A map the budget cut (fewer IG steps)
            is shown but not compared: drift is not measured and rules are not checked for it that epoch, so
            ``xai/<method>/drift/*`` has no value then (use ``EarlyStopping(strict=False)``).

    Example::

        >>> import lightning.pytorch as L
        >>> from lightning.pytorch.loggers import TensorBoardLogger
        >>> monitor = AttributionMonitor(num_probes=8, methods=("gradcam", "integrated_gradients"))
        >>> trainer = L.Trainer(callbacks=[monitor], logger=TensorBoardLogger("logs"), max_epochs=5)
        >>> # trainer.fit(model, datamodule)  -> tensorboard --logdir logs
    """

    def __init__(
        self,
        probes: Tensor | tuple[Tensor, Tensor] | Dataset | None = None,
        num_probes: int = 8,
        methods: Sequence[str | Explainer] = ("gradcam", "integrated_gradients"),
        target: TargetSpec = "label",
        gradcam_layer: str | torch.nn.Module | None = None,
        gradcam_reshape: GradcamReshape | None = None,
        ig_steps: int | Literal["auto"] = "auto",
        ig_baseline: float | Tensor | None = None,
        ig_internal_batch_size: int | None = None,
        every_n_epochs: int = 1,
        on_drift: OnDrift = "warn",
        denormalize: Denormalize = None,
        seed: int = 0,
        warmup_epochs: int = 2,
        reference_epoch: int | None = None,
        drift_rules: Sequence[DriftRule] = (DriftRule(),),
        probe_threshold: float = 0.4,
        topk: float = 0.1,
        colormap: str = "jet",
        log_heatmaps: bool = False,
        output_transform: Callable[[Any], Tensor] | None = None,
        probe_masks: Tensor | Callable[[Tensor, Tensor | None], Tensor] | None = None,
        background_logging: bool = True,
        forward_fn: ModelForwardFn | None = None,
        max_seconds_per_epoch: float | None = None,
    ) -> None:
        super().__init__()
        if max_seconds_per_epoch is not None and not (
            isinstance(max_seconds_per_epoch, (int, float))
            and not isinstance(max_seconds_per_epoch, bool)
            and max_seconds_per_epoch > 0
        ):
            raise ValueError(
                f"`max_seconds_per_epoch` must be > 0 (seconds) or None for no budget, got {max_seconds_per_epoch!r}."
            )
        if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
            raise ValueError(f"`num_probes` must be an int >= 1, got {num_probes!r}.")
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"`every_n_epochs` must be an int >= 1, got {every_n_epochs!r}.")
        if not (callable(on_drift) or on_drift in ON_DRIFT_ACTIONS):
            raise ValueError(
                f"`on_drift={on_drift!r}` is not supported; use one of {list(ON_DRIFT_ACTIONS)} or a callable "
                "that receives a DriftAlert."
            )
        if not 0.0 < topk <= 1.0:
            raise ValueError(f"`topk` must be in (0, 1], got {topk!r}.")
        if warmup_epochs < 0:
            raise ValueError(f"`warmup_epochs` must be >= 0, got {warmup_epochs!r}.")
        if probes is not None and not isinstance(probes, (Tensor, tuple, Dataset)):
            raise ValueError(
                f"`probes` must be None, a Tensor (N, C, H, W), a tuple (images, labels) or a torch Dataset; "
                f"got {type(probes).__name__}."
            )
        if isinstance(probes, Tensor) and probes.ndim != 4:
            raise ValueError(
                f"`probes` must be a 4-D tensor (N, C, H, W), got shape {tuple(probes.shape)}. "
                "Add a batch dimension with `probes.unsqueeze(0)` for a single image."
            )
        check_target(target)
        check_colormap(colormap)
        check_denormalize(denormalize)
        if forward_fn is not None and not callable(forward_fn):
            raise ValueError(f"`forward_fn` must be a callable `(pl_module, x) -> output`, got {forward_fn!r}.")
        self.explainers = build_explainers(
            methods, gradcam_layer, gradcam_reshape, ig_steps, ig_baseline, ig_internal_batch_size
        )
        if not self.explainers:
            raise ValueError(f"`methods` is empty; choose at least one of {sorted(METHODS)}.")
        #: IG explainers whose batch is neither fixed nor bounded by the user: capped at the training batch size
        self._batch_capped = [
            e
            for e in self.explainers
            if isinstance(e, IntegratedGradients) and e.internal_batch_size is None and e.max_batch is None
        ]
        self.max_seconds_per_epoch = None if max_seconds_per_epoch is None else float(max_seconds_per_epoch)
        self.probe_source = probes
        self.num_probes = num_probes
        self.target = target
        self.every_n_epochs = every_n_epochs
        self.on_drift = on_drift
        self.denormalize = denormalize
        self.seed = seed
        self.colormap = colormap
        self.log_heatmaps = log_heatmaps
        self.output_transform = output_transform
        self.forward_fn = forward_fn
        self.drift = DriftTracker(warmup_epochs, reference_epoch, topk, probe_threshold)
        self.tracker = AlertTracker(list(drift_rules))
        self.writer = BackgroundWriter(background=background_logging)
        self.probes: ProbeSet | None = None
        self.probe_masks = probe_masks
        self.masks: Tensor | None = None
        self.history: list[dict[str, Any]] = []
        self.evaluations = 0
        self._probes_logged = False
        self._prepared_for: int | None = None
        self._warned: set[str] = set()
        self._inactive = False  # fit with limit_val_batches=0: nothing to do
        self._state_key = self._generate_state_key(
            methods=tuple(explainer_key(e) for e in self.explainers),
            num_probes=num_probes,
            seed=seed,
            probes=source_key(probes),
            target=target_key(target),
            every_n_epochs=every_n_epochs,
            warmup_epochs=warmup_epochs,
            reference_epoch=reference_epoch,
            topk=topk,
            probe_threshold=probe_threshold,
            drift_rules=tuple(drift_rules),
        )

    # ----------------------------------------------------------------------------------------------- state
    @property
    @override
    def state_key(self) -> str:
        """Identifies this monitor's state in a checkpoint: built from every setting that shapes the state
        (methods and their parameters, probes, target, drift and alert settings), not from presentation
        (colormap, logging) or actions (``on_drift``), so those can change when resuming."""
        return self._state_key

    @property
    def alerts(self) -> list[DriftAlert]:
        """Every alert of the run (kept in the checkpoint)."""
        return self.tracker.alerts

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "probes": None if self.probes is None else self.probes.images.clone(),
            "labels": None if self.probes is None or self.probes.labels is None else self.probes.labels.clone(),
            "masks": None if self.masks is None else self.masks.clone(),
            "drift": self.drift.state_dict(),
            "alerts": self.tracker.state_dict(),
            "history": list(self.history),
            "evaluations": self.evaluations,
            "probes_logged": self._probes_logged,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("probes") is not None:
            self.probes = ProbeSet(state_dict["probes"], state_dict.get("labels"), "checkpoint")
            self._prepared_for = None
        if state_dict.get("masks") is not None:
            self.masks = state_dict["masks"]
        self.drift.load_state_dict(state_dict.get("drift", {}))
        self.tracker.load_state_dict(state_dict.get("alerts", {}))
        self.history = list(state_dict.get("history", []))
        self.evaluations = int(state_dict.get("evaluations", 0))
        self._probes_logged = bool(state_dict.get("probes_logged", False))

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Say so when the checkpoint holds monitor state under other settings: Lightning would skip it silently
        and the run would start a new reference and history."""
        keys = [str(k) for k in checkpoint.get("callbacks", {}) if str(k).startswith(type(self).__name__)]
        if keys and self.state_key not in keys:
            rank_zero_warn(
                f"AttributionMonitor: the checkpoint holds monitor state for {keys} but this monitor is "
                f"{self.state_key}, so its probes, reference, history and alerts start afresh. Resume with the same "
                "settings (methods, ig_steps and ig_baseline, probes, target, drift settings) to keep them; "
                "checkpoints from before `ig_steps='auto'` became the default need `ig_steps=32`."
            )

    # ----------------------------------------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        check_strategy(trainer.strategy)
        if not self._tensorboard_writers(trainer, all_ranks=True):
            self._warn_once(
                "no_tensorboard",
                "AttributionMonitor: no TensorBoardLogger in `Trainer(logger=...)`, so heatmap grids and tables "
                "are not logged; drift scalars, alerts and history are still computed. Add "
                "`logger=TensorBoardLogger('logs')` to see the heatmaps.",
            )

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._inactive = trainer.limit_val_batches == 0
        if self._inactive:
            self._warn_once(
                "no_validation",
                "AttributionMonitor: `limit_val_batches=0` disables validation, so the monitor does nothing in "
                "this fit (it explains at the end of validation epochs).",
            )
            return
        self._ensure_ready(trainer, pl_module)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._inactive:
            return
        self._ensure_ready(trainer, pl_module)
        batch_size = training_batch_size(trainer.train_dataloader)
        for explainer in self._batch_capped:
            explainer.limit_batch(batch_size)

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._ensure_ready(trainer, pl_module)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self._due(trainer):
            return
        if not self._ensure_ready(trainer, pl_module):
            self._warn_once(
                "no_probes",
                "AttributionMonitor: no probes (no `probes=` given and no validation dataloader found); "
                "nothing is explained.",
            )
            return
        self._evaluate(trainer, pl_module)

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._ensure_ready(trainer, pl_module)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._ensure_ready(trainer, pl_module):
            self._warn_once(
                "no_probes",
                "AttributionMonitor: no probes (no `probes=` given and no test dataloader "
                "found); nothing is explained.",
            )
            return
        self._evaluate(trainer, pl_module)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush()

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush()

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.training and not trainer.sanity_checking:
            self._flush()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._flush()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._flush()
        self.writer.close()

    # ------------------------------------------------------------------------------------------ machinery
    def _due(self, trainer: Trainer) -> bool:
        if trainer.state.fn != TrainerFn.FITTING:  # trainer.validate / test: always explain
            return True
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _ensure_ready(self, trainer: Trainer, pl_module: LightningModule) -> bool:
        """Collect the probes (once) and validate them, the target and the methods against the model."""
        if self.probes is None:
            source: ProbeSource = self.probe_source
            if source is None:
                source = first_loader(trainer)
                if source is None:
                    return False
            with torch.inference_mode(False):  # trainer.validate/test: keep probes normal (autograd-able) tensors
                testing = trainer.state.fn == TrainerFn.TESTING
                name = "test dataloader" if testing else "validation dataloader"
                self.probes = collect_probes(source, self.num_probes, self.seed, loader_name=name)
            if self.probe_source is None or isinstance(self.probe_source, Dataset):
                if len(self.probes) < self.num_probes:
                    rank_zero_warn(
                        f"AttributionMonitor: `num_probes={self.num_probes}` but the {self.probes.source} holds "
                        f"only {len(self.probes)} usable images; using those {len(self.probes)}."
                    )
        if self.masks is None and self.probe_masks is not None:
            with torch.inference_mode(False):
                self.masks = resolve_masks(self.probe_masks, self.probes)
        if self._prepared_for == id(pl_module):
            return True
        self._prepare(pl_module)
        self._prepared_for = id(pl_module)
        return True

    def _prepare(self, pl_module: LightningModule) -> None:
        assert self.probes is not None
        device = pl_module.device
        example = self.probes.images[:1].to(device)
        with (
            training_state_guard(pl_module, device),
            model_forward(pl_module, self.output_transform, self.forward_fn) as forward,
        ):
            try:
                logits = forward(example.clone())
            except Exception as err:
                raise ValueError(
                    f"`probes` of shape {tuple(self.probes.images.shape[1:])} (C, H, W) do not fit "
                    f"{type(pl_module).__name__}: its forward raised {type(err).__name__}: {err}. Pass probes "
                    "shaped like one validation input, or `output_transform=` if the output is not logits."
                ) from err
            if logits.ndim != 2:
                raise ValueError(
                    f"{type(pl_module).__name__}'s forward returns shape {tuple(logits.shape)} for probes; "
                    "AttributionMonitor needs (N, num_classes) logits. Pass `output_transform=` to select them."
                )
            num_classes = int(logits.shape[1])
            check_target(self.target, num_classes=num_classes, num_probes=len(self.probes))
            if self.target == "label" and self.probes.labels is not None:
                bad = self.probes.labels[(self.probes.labels < 0) | (self.probes.labels >= num_classes)]
                if bad.numel():
                    raise ValueError(
                        f"`probes` labels {sorted(set(bad.tolist()))[:5]} are outside the model's "
                        f"{num_classes} classes; pass labels in [0, {num_classes - 1}] or `target='predicted'`."
                    )
            for explainer in self.explainers:
                explainer.setup(pl_module, forward, example.clone())

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Rank 0 explains and measures; the outcome is broadcast so every rank logs and decides the same.

        A failure on rank 0 is broadcast too, so every rank raises instead of waiting in the broadcast."""
        entry: dict[str, Any] | None = None
        failure: BaseException | None = None
        if trainer.is_global_zero:
            try:
                entry = self._explain_and_measure(trainer, pl_module)
            except BaseException as err:  # noqa: BLE001 - re-raised below, after the other ranks were told
                failure = err
                entry = {"failure": f"{type(err).__name__}: {err}"}
        if trainer.world_size > 1:
            entry = trainer.strategy.broadcast(entry, src=0)
        if failure is not None:
            raise failure
        assert entry is not None
        if "failure" in entry:
            raise RuntimeError(f"AttributionMonitor failed on rank 0, so every rank stops: {entry['failure']}")
        if not trainer.is_global_zero:
            self.history.append(entry)
            self.evaluations += 1
            self.tracker.alerts.extend(DriftAlert.from_dict(a) for a in entry["alerts"])
        distributed = trainer.world_size > 1
        for key, value in entry["scalars"].items():
            # identical on every rank already; under DDP a max-reduce keeps them exact (and is what Lightning
            # expects of epoch-level logs), so EarlyStopping/ModelCheckpoint see the same value on every rank
            pl_module.log(
                key,
                value,
                on_step=False,
                on_epoch=True,
                sync_dist=distributed,
                reduce_fx="max" if distributed else "mean",
                add_dataloader_idx=False,
            )
        self._act(trainer, [DriftAlert.from_dict(a) for a in entry["alerts"]])

    def _explain_and_measure(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """Explain the probes with every method, update drift and alert state, queue the TensorBoard media."""
        assert self.probes is not None
        device = pl_module.device
        epoch, step = int(trainer.current_epoch), int(trainer.global_step)
        done = explain_probes(
            pl_module,
            self.probes.images,
            self.probes.labels,
            self.explainers,
            self.target,
            output_transform=self.output_transform,
            forward_fn=self.forward_fn,
            max_seconds=self.max_seconds_per_epoch,
            epoch=epoch,
            warn_once=self._warn_once,
        )
        self.evaluations += 1
        scalars: dict[str, float] = {}
        new_alerts: list[DriftAlert] = []
        masks = None if self.masks is None else self.masks.to(device)
        for name, explanation in done.results.items():
            cut = explanation.diagnostics.get("budget_limited")
            if cut is not None and bool(cut.any()):  # fewer steps than the reference: a worse map, not a drift
                note = (
                    f"{name} at epoch {epoch}: `max_seconds_per_epoch` cut its work, so its drift is not measured "
                    "and its rules are not checked this epoch (the map is still shown)."
                )
                done.errors.append(note)
                self._warn_once(f"budget_cut_{name}", f"AttributionMonitor: {note}")
            else:
                drift = self.drift.update(name, epoch, explanation.raw)
                scalars.update({f"xai/{name}/drift/{key}": value for key, value in drift.statistics.items()})
                new_alerts += self._check_rules(name, drift, epoch, step)
            for key, values in explanation.diagnostics.items():
                scalars[f"xai/{name}/{key}"] = float(values.double().median())
            if masks is not None:
                scalars[f"xai/localization/{name}/relevance_mass"] = float(
                    relevance_mass(explanation.display, masks).double().mean()
                )
                scalars[f"xai/localization/{name}/pointing_game"] = float(
                    pointing_game(explanation.display, masks).double().mean()
                )
        entry = {
            "epoch": epoch,
            "global_step": step,
            "scalars": scalars,
            "errors": done.errors,
            "alerts": [a.to_dict() for a in new_alerts],
            "explain_seconds": done.seconds,
        }
        self.history.append(entry)
        self._log_media(trainer, done, new_alerts, step)
        return entry

    def _check_rules(self, method: str, drift: DriftResult, epoch: int, step: int) -> list[DriftAlert]:
        if not drift.alerts_armed:
            return []
        alerts = []
        for rule in self.tracker.update(method, drift.statistics):
            per_probe = drift.per_probe[f"{rule.metric}_vs_{rule.reference}"]
            cut = rule.threshold if rule.statistic == "median" else self.drift.probe_threshold
            drifted = tuple(int(i) for i in torch.nonzero(per_probe >= cut).flatten())
            value = drift.statistics[rule.key]
            alert = DriftAlert(
                epoch=epoch,
                global_step=step,
                method=method,
                metric=f"{rule.metric}_vs_{rule.reference}",
                statistic=rule.statistic,
                value=value,
                threshold=rule.threshold,
                probe_indices=drifted,
                message=(
                    f"Attribution drift at epoch {epoch} (step {step}): {method} {rule.key} = {value:.3f} >= "
                    f"{rule.threshold:.3f}; probes over it: {list(drifted) or 'none alone'}. The model may rely on "
                    "different evidence (e.g. a shortcut). Open TensorBoard tag "
                    f"'xai/{method}/overlay' to see where it looks now."
                ),
            )
            self.tracker.alerts.append(alert)
            alerts.append(alert)
        return alerts

    def _act(self, trainer: Trainer, alerts: list[DriftAlert]) -> None:
        for alert in alerts:
            if callable(self.on_drift):
                self.on_drift(alert)
            else:
                rank_zero_warn(f"AttributionMonitor: {alert.message}")
        if self.on_drift == "stop":
            stop = trainer.strategy.reduce_boolean_decision(bool(alerts), all=False)
            if stop:
                trainer.should_stop = True
        if self.on_drift == "raise" and alerts:
            self._flush()
            raise DriftDetectedError(alerts[0])

    def _log_media(self, trainer: Trainer, done: ProbeExplanations, alerts: list[DriftAlert], step: int) -> None:
        writers = self._tensorboard_writers(trainer)
        if not writers:
            return
        assert self.probes is not None
        grids = image_grids(
            done.inputs,
            done.results,
            {e.name: e.display_normalization for e in self.explainers},
            colormap=self.colormap,
            denormalize=self.denormalize,
            log_heatmaps=self.log_heatmaps,
            include_probes=not self._probes_logged,
        )
        self._probes_logged = True
        messages = [a.message for a in alerts]
        texts = text_records(self.probes.labels, done.targets, done.predicted, done.confidence, done.errors, messages)
        for writer in writers:
            for tag, image in grids:
                self.writer.submit(add_image_job(writer, tag, image, step))
            for tag, text in texts:
                self.writer.submit(add_text_job(writer, tag, text, step))

    def _tensorboard_writers(self, trainer: Trainer, all_ranks: bool = False) -> list[Any]:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if all_ranks:
            return loggers
        if not trainer.is_global_zero:
            return []
        return [lg.experiment for lg in loggers]

    def _flush(self) -> None:
        self.writer.flush()
        for error in self.writer.pop_errors():
            rank_zero_warn(f"AttributionMonitor: logging to TensorBoard failed: {error}")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_prepared_for"] = None
        return state
