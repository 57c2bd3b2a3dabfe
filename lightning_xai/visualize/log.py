"""Sends one evaluation's pictures and tables to every logger of the run that takes them (TensorBoard, CSV, W&B,
MLflow: :mod:`lightning_xai.visualize.loggers`), through the background writer.

The monitor says what the pictures need to know about it in a :class:`MediaContext` (its name, its drift tracker,
rules and settings); this module never looks the monitor up among ``trainer.callbacks``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_xai.explain.base import check_int
from lightning_xai.explain.run import ProbeExplanations
from lightning_xai.visualize.dashboard import named, summary_scalars
from lightning_xai.visualize.display import Denormalize, black_input
from lightning_xai.visualize.evidence import evidence_tag, render_evidence
from lightning_xai.visualize.loggers import MediaSink, logger_key, sink_for, supported
from lightning_xai.visualize.media import Picture, evaluation_media
from lightning_xai.visualize.sheet import DEFAULT_TILE_SIZE
from lightning_xai.visualize.writer import BackgroundWriter

if TYPE_CHECKING:
    from lightning_xai.drift.measure import Evaluation


@dataclass
class MediaContext:
    """What the pictures need from the monitor that logs them, passed to :meth:`MediaLogger.log`.

    Attributes:
        name: the monitor's ``name=``: every tag, file and directory becomes ``xai/<name>/...`` (None: as documented).
        drift: the drift tracker (``reference``, ``reference_epochs``, ``distances``, ``probe_threshold``) that
            captions the sheet with each probe's drift against the reference; None: no drift captions.
        rules: the :class:`~lightning_xai.DriftRule` s (their series and thresholds get summary charts).
        settings: the run's settings as primitives (``lightning_xai.settings.run_settings``), written once per
            logger version.
    """

    name: str | None = None
    drift: Any = None
    rules: Sequence[Any] = ()
    settings: dict[str, Any] = field(default_factory=dict)


class MediaLogger:
    """Renders an evaluation (the sheet and the grids on the training device, copied to the CPU once; an evidence
    image per alert that carries evidence) and queues it for every logger of the trainer that takes images, on rank 0.

    The probes grid and the settings go to each logger version once: a fit resumed into a new version writes them
    there too (:attr:`probes_logged` holds the versions that have them, kept in the checkpoint).
    """

    def __init__(
        self,
        colormap: str,
        denormalize: Denormalize,
        log_heatmaps: bool,
        background: bool,
        tile_size: int = DEFAULT_TILE_SIZE,
        grids: bool = False,
    ) -> None:
        self.colormap, self.denormalize, self.log_heatmaps = colormap, denormalize, log_heatmaps
        self.tile_size, self.grids = check_int("tile_size", tile_size, 16), grids
        self.writer = BackgroundWriter(background=background)
        #: the logger versions (:func:`~lightning_xai.visualize.loggers.logger_key`) that have the probes and settings
        self.logged_to: set[str] = set()
        self._sinks: dict[int, MediaSink] = {}

    @property
    def probes_logged(self) -> list[str]:
        """The logger versions that hold the probes grid and the settings (primitives, for the checkpoint)."""
        return sorted(self.logged_to)

    @probes_logged.setter
    def probes_logged(self, value: Any) -> None:
        # a list of logger versions; an older checkpoint's bool does not say which version has them: log them again
        self.logged_to = {str(v) for v in value} if isinstance(value, (list, tuple, set)) else set()

    @staticmethod
    def tensorboard_loggers(trainer: Trainer) -> list[TensorBoardLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    @staticmethod
    def image_loggers(trainer: Trainer) -> list[Logger]:
        """The loggers that receive the sheet, grids and tables: TensorBoard, CSV, W&B and MLflow."""
        return [lg for lg in trainer.loggers if supported(lg)]

    def missing_logger_message(self, trainer: Trainer) -> str | None:
        """The warning for a run without a TensorBoardLogger (None when it has one): what is and is not logged."""
        if self.tensorboard_loggers(trainer):
            return None
        others = [type(lg).__name__ for lg in self.image_loggers(trainer)]
        if others:
            return (
                f"AttributionMonitor: no TensorBoardLogger in `Trainer(logger=...)`, so the TensorBoard dashboard is "
                f"not written; the explanation sheet, grids and tables go to {', '.join(others)}."
            )
        return (
            "AttributionMonitor: no TensorBoardLogger (nor CSV, W&B or MLflow logger) in `Trainer(logger=...)`, so "
            "the explanation sheet, grids and tables are not logged; drift scalars, alerts and history are still "
            "computed. Add `logger=TensorBoardLogger('logs')` to see them."
        )

    def sinks(self, trainer: Trainer) -> list[MediaSink]:
        out = []
        for logger in self.image_loggers(trainer):
            sink = self._sinks.get(id(logger))
            if sink is None or sink.logger is not logger:
                sink = sink_for(logger)
                assert sink is not None
                self._sinks[id(logger)] = sink
            out.append(sink)
        return out

    def log(
        self,
        trainer: Trainer,
        done: ProbeExplanations,
        labels: Tensor | None,
        record: Evaluation,
        normalizations: Mapping[str, str],
        context: MediaContext | None = None,
    ) -> None:
        """Render and queue one evaluation for every image logger (rank 0). ``context``: what the monitor tells the
        pictures (:meth:`MediaContext.from_monitor`); None logs without drift captions, name or run settings."""
        sinks = self.sinks(trainer) if trainer.is_global_zero else []
        if not sinks:
            return
        try:
            context = context or MediaContext()
            self._log(sinks, done, labels, record, normalizations, context)
        except Exception as err:  # noqa: BLE001 - pictures must never stop training
            rank_zero_warn(f"AttributionMonitor: rendering the pictures failed, none logged this epoch: {err!r}")

    def _log(
        self,
        sinks: list[MediaSink],
        done: ProbeExplanations,
        labels: Tensor | None,
        record: Evaluation,
        normalizations: Mapping[str, str],
        context: MediaContext,
    ) -> None:
        drift, note = probe_drift(context.drift, done)
        keys = [logger_key(sink.logger) for sink in sinks]
        media = evaluation_media(
            done.inputs,
            done.results,
            normalizations,
            epoch=record.epoch,
            step=record.global_step,
            predicted=done.predicted,
            confidence=done.confidence,
            targets=done.targets,
            labels=labels,
            errors=record.errors,
            alert_messages=[alert_text(a) for a in record.alerts],
            colormap=self.colormap,
            denormalize=self.denormalize,
            log_heatmaps=self.log_heatmaps,
            grids=self.grids,
            include_probes=any(key not in self.logged_to for key in keys),
            tile_size=self.tile_size,
            drift=drift,
            drift_note=note,
            probe_threshold=getattr(context.drift, "probe_threshold", None),
            title=f"epoch {record.epoch}   step {record.global_step}" + _alert_title(record.alerts),
        )
        media.images += self._evidence(done, labels, record.alerts)
        name = context.name
        media.images = [(named(tag, name), image) for tag, image in media.images]
        media.tables = [(named(tag, name), table) for tag, table in media.tables]
        media.texts = [(named(tag, name), text) for tag, text in media.texts]
        methods = list(normalizations)
        summary = summary_scalars(record.scalars, record.alerts, methods, context.rules, name)
        settings = self.settings(context.settings, int(done.inputs.shape[0]))
        probes_tag = named("xai/probes", name)
        for sink, key in zip(sinks, keys, strict=True):
            first = key not in self.logged_to
            mine = dataclasses.replace(
                media,
                images=[(t, i) for t, i in media.images if first or t != probes_tag],
                settings=settings if first else None,
            )
            for job in sink.jobs(mine, methods, name=name, summary=summary, rules=context.rules):
                self.writer.submit(job)
            self.logged_to.add(key)

    def _evidence(self, done: ProbeExplanations, labels: Tensor | None, alerts: Sequence[Any]) -> list[tuple[str, Any]]:
        """One evidence image per method that alerted with evidence (the first such alert of the evaluation)."""
        images: list[tuple[str, Any]] = []
        for alert in alerts:
            tag = evidence_tag(alert.method)
            if getattr(alert, "evidence", None) is None or any(t == tag for t, _ in images):
                continue
            image = render_evidence(
                done.inputs,
                alert,
                denormalize=self.denormalize,
                colormap=self.colormap,
                tile_size=self.tile_size,
                labels=labels,
            )
            if image is not None:
                images.append((tag, Picture.from_tensor(image)))
        return images

    def settings(self, monitor: Mapping[str, Any], num_probes: int) -> dict[str, Any]:
        """The run's settings as written: the monitor's (``MediaContext.settings``), the number of probes and the
        presentation (colormap, tile size)."""
        return {**monitor, "num_probes": num_probes, "colormap": self.colormap, "tile_size": self.tile_size}

    def flush(self) -> None:
        """Wait for queued media; warn about any that failed to write."""
        self.writer.flush()
        for error in self.writer.pop_errors():
            rank_zero_warn(f"AttributionMonitor: logging images or tables failed: {error}")

    def close(self) -> None:
        """Flush (warning about media that failed to write), stop the writer thread, close the sinks."""
        self.flush()
        self.writer.close()
        for sink in self._sinks.values():
            sink.close()

    def __getstate__(self) -> dict[str, Any]:  # picklable for ddp_spawn: loggers are found again on each rank
        state = self.__dict__.copy()
        state["_sinks"] = {}
        return state


def _alert_title(alerts: Sequence[Any]) -> str:
    """What the sheet's title says of this evaluation's alerts: the methods that alerted (the sheet's red "vs ref"
    figures are each probe's rank drift, not the detector's signal)."""
    methods = sorted({a.method for a in alerts})
    return f"   ALERT: {', '.join(methods)} (see xai/alerts)" if methods else ""


def alert_text(alert: Any) -> str:
    """An alert as the ``xai/alerts`` text shows it: its message, then the value against its threshold (the
    message is kept short for the warning; the text has room for the numbers).

    Example::

        >>> from lightning_xai.drift.alerts import DriftAlert
        >>> alert_text(DriftAlert(5, 50, "gradcam", "novel_relevance", "mean", 0.052, 0.031, (1, 3), "Moved."))
        'Moved. (score 0.052 >= threshold 0.031; probes [1, 3])'
    """
    return (
        f"{alert.message} (score {alert.value:.3g} >= threshold {alert.threshold:.3g}; "
        f"probes {list(alert.probe_indices)})"
    )


def probe_drift(tracker: Any, done: ProbeExplanations) -> tuple[dict[str, Tensor | None], str]:
    """Per method, each probe's rank drift (1 - Spearman of |A|) against the tracker's reference maps (None before
    the reference epoch, or for a map the time budget cut), and the legend line that says so."""
    reference = getattr(tracker, "reference", None)
    if tracker is None or not isinstance(reference, dict):
        return {}, ""
    out: dict[str, Tensor | None] = {}
    epochs = set()
    for name, explanation in done.results.items():
        stored = reference.get(name)
        cut = explanation.diagnostics.get("budget_limited")
        if stored is None or stored.shape != explanation.raw.shape or (cut is not None and bool(cut.any())):
            out[name] = None
            continue
        out[name] = tracker.distances(explanation.raw.detach().float(), stored)["rank"]
        epochs.add(tracker.reference_epochs.get(name))
    if not epochs:
        return out, "vs ref: rank drift against the reference epoch (none before it)"
    shown = ", ".join(str(e) for e in sorted(e for e in epochs if e is not None))
    return out, f"vs ref: rank drift (1 - Spearman of |attribution|) against epoch {shown}"


def resolved_method_settings(explainer: Any, denormalize: Denormalize = None) -> dict[str, Any]:
    """A method's ``config()`` with what it resolved: the layer Grad-CAM explains (its dotted name once set up;
    ``"automatic (chosen at setup)"`` before) and what Integrated Gradients' baseline is in words.

    Example::

        >>> from lightning_xai.explain import IntegratedGradients
        >>> resolved_method_settings(IntegratedGradients(n_steps=8))["baseline"]
        'zeros'
        >>> ig = IntegratedGradients(n_steps=8, baseline=black_input(([0.5], [0.25])))
        >>> resolved_method_settings(ig, ([0.5], [0.25]))["baseline"]
        'black (-mean/std) [-2.0]'
    """
    config = dict(explainer.config())
    if "layer" in config:
        resolved = getattr(explainer, "layer_name", None)
        if isinstance(resolved, str) and resolved:
            config["layer"] = resolved
        elif config["layer"] is None:
            config["layer"] = "automatic (chosen at setup)"
    if "baseline" in config and hasattr(explainer, "baseline"):
        config["baseline"] = describe_baseline(explainer.baseline, denormalize)
    return config


def describe_baseline(baseline: Any, denormalize: Denormalize = None) -> Any:
    """Integrated Gradients' baseline in words: ``"zeros"``, the number, ``"black (-mean/std) [...]"`` for the input
    that displays as black, or the tensor's shape and values (the first 8).

    Example::

        >>> describe_baseline(None), describe_baseline(0.5), describe_baseline(torch.zeros(3, 1, 1))
        ('zeros', 0.5, 'tensor (3, 1, 1) [0.0, 0.0, 0.0]')
    """
    if baseline is None:
        return "zeros"
    if not isinstance(baseline, Tensor):
        return baseline
    values = [round(float(v), 4) for v in baseline.detach().flatten()[:8].cpu()]
    shown = f"{values}" if baseline.numel() <= 8 else f"{values[:-1]}..."
    black = black_input(denormalize)
    if black is not None and black.shape == baseline.shape and torch.allclose(black, baseline.detach().cpu().float()):
        return f"black (-mean/std) {shown}"
    return f"tensor {tuple(baseline.shape)} {shown}"
