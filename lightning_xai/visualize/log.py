"""Sends one evaluation's pictures and tables, through the background writer, to every logger that takes them; what
they need to know of the monitor comes in a :class:`MediaContext` (this module never looks in ``trainer.callbacks``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor

from lightning_xai import _warn
from lightning_xai.drift.measure import not_compared
from lightning_xai.explain.run import ProbeExplanations
from lightning_xai.visualize.dashboard import named, summary_scalars
from lightning_xai.visualize.display import Denormalize, black_input
from lightning_xai.visualize.loggers import MediaSink, logger_key, media_place, sink_for
from lightning_xai.visualize.media import Picture, evaluation_media
from lightning_xai.visualize.sheet import DEFAULT_TILE_SIZE, METHOD_TITLES, evidence_tag, render_evidence
from lightning_xai.visualize.writer import BackgroundWriter

if TYPE_CHECKING:
    from lightning_xai.drift.measure import Evaluation


@dataclass
class MediaContext:
    """What the pictures need from the monitor: name, drift tracker (captions), rules (charts), run settings and
    whether the run has localisation scalars (``Display.probe_masks``: the dashboard's localisation chart)."""

    name: str | None = None
    drift: Any = None
    rules: Sequence[Any] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    localised: bool = False


class MediaLogger:
    """Renders an evaluation (and alerts' evidence) for every image logger on rank 0; probes and settings once each."""

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
        self.tile_size, self.grids = tile_size, grids  # (checked by Display)
        self.writer = BackgroundWriter(background=background)
        self.logged_to: set[str] = set()  # the logger versions (:func:`logger_key`) that have the probes and settings
        self._sinks: dict[int, MediaSink] = {}
        self._said: set[str] = set()  # the writing failures warned about

    @property
    def probes_logged(self) -> list[str]:
        """The logger versions that hold the probes grid and the settings (primitives, for the checkpoint)."""
        return sorted(self.logged_to)

    @probes_logged.setter
    def probes_logged(self, value: Any) -> None:
        # a list of logger versions; an older checkpoint's bool does not say which version has them: log them again
        self.logged_to = {str(v) for v in value} if isinstance(value, (list, tuple, set)) else set()

    @staticmethod
    def image_loggers(trainer: Trainer) -> list[Logger]:
        """The loggers that receive the sheet, grids and tables: TensorBoard, CSV, W&B and MLflow."""
        return [lg for lg in trainer.loggers if sink_for(lg) is not None]

    def missing_logger_message(self, trainer: Trainer) -> str | None:
        """The warning for a run without a TensorBoardLogger (None when it has one): what is and is not logged."""
        if any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers):
            return None
        others = [media_place(lg) for lg in self.image_loggers(trainer)]
        if others:
            shown = "the explanation sheet, grids and tables" if self.grids else "the explanation sheet and tables"
            return (
                f"AttributionMonitor: no TensorBoardLogger in `Trainer(logger=...)`, so the TensorBoard dashboard is "
                f"not written; {shown} go to {', '.join(others)}."
            )
        if getattr(trainer, "barebones", False):  # it refuses every logger: adding one is no fix
            return (
                "AttributionMonitor: `Trainer(barebones=True)` has no logger, so the explanation sheet, grids, tables "
                "and scalars are not logged; drift, alerts and scalars are still computed, in `monitor.history` and "
                "`monitor.alerts`. To see them, train without `barebones=True`, with `logger=TensorBoardLogger(...)`."
            )
        return (
            "AttributionMonitor: no TensorBoardLogger (nor CSV, W&B or MLflow logger) in `Trainer(logger=...)`, so "
            "the explanation sheet, grids and tables are not logged; drift scalars, alerts and history are still "
            "computed. Add `logger=TensorBoardLogger('logs')` to see them."
        )

    def sinks(self, trainer: Trainer) -> list[MediaSink]:
        """One sink per image logger, kept while the logger is the same object."""
        for logger in trainer.loggers:
            kept = self._sinks.get(id(logger))
            if (kept is None or kept.logger is not logger) and (sink := sink_for(logger)) is not None:
                self._sinks[id(logger)] = sink
        return [self._sinks[id(logger)] for logger in self.image_loggers(trainer)]

    def log(
        self,
        trainer: Trainer,
        done: ProbeExplanations,
        labels: Tensor | None,
        record: Evaluation,
        normalizations: Mapping[str, str],
        context: MediaContext | None = None,
    ) -> None:
        """Render and queue one evaluation for every image logger (rank 0); a rendering failure raises, named."""
        sinks = self.sinks(trainer) if trainer.is_global_zero else []
        if not sinks:
            return
        context = context or MediaContext()
        try:
            drift, note = probe_drift(context.drift, done)
            keys = [logger_key(sink.logger) for sink in sinks]
            style: dict[str, Any] = dict(denormalize=self.denormalize, colormap=self.colormap, tile_size=self.tile_size)
            probes: dict[str, Any] = dict(predicted=done.predicted, confidence=done.confidence, targets=done.targets)
            title = f"epoch {record.epoch}   step {record.global_step}"
            alerted = ", ".join(METHOD_TITLES.get(m, m) for m in sorted({a.method for a in record.alerts}))
            cooldown = int(context.settings.get("cooldown") or 0)  # why a score over its threshold may not alert
            silent = (
                f"; then silent for {_warn.count(cooldown, 'evaluation')}, `DriftPolicy(cooldown=)`" if cooldown else ""
            )
            pointer = f"   ALERT: {alerted}" if alerted else ""  # (its text: xai/alerts) its moved probes in red
            media = evaluation_media(
                done.inputs,
                done.results,
                normalizations,
                epoch=record.epoch,
                step=record.global_step,
                labels=labels,
                **probes,
                errors=record.errors,
                alert_messages=[
                    f"{a.message} (score {a.value:.3g} >= threshold {a.threshold:.3g}; probes {list(a.probe_indices)}"
                    + (f"; {a.follow.summary()}" if a.follow is not None else "")
                    + silent
                    + ")"
                    for a in record.alerts
                ],
                log_heatmaps=self.log_heatmaps,
                grids=self.grids,
                include_probes=any(key not in self.logged_to for key in keys),
                drift=drift,
                drift_note=note,
                moved={m: {i for a in record.alerts if a.method == m for i in a.probe_indices} for m in done.results},
                title=title,
                alert=pointer,
                **style,
            )
            for alert in record.alerts:  # one evidence image per method: its first alert with evidence
                tag = evidence_tag(alert.method)
                seen = any(t == tag for t, _ in media.images)
                if not seen and (image := render_evidence(done.inputs, alert, labels=labels, **style)) is not None:
                    media.images.append((tag, Picture.from_tensor(image)))
            name = context.name
            media.images = [(named(tag, name), image) for tag, image in media.images]
            media.tables = [(named(tag, name), table) for tag, table in media.tables]
            media.texts = [(named(tag, name), text) for tag, text in media.texts]
            media.methods, media.name, media.rules = list(normalizations), name, context.rules
            media.localised = context.localised
            media.summary = summary_scalars(record.scalars, record.alerts, media.methods, context.rules, name)
            settings = {**context.settings, "num_probes": int(done.inputs.shape[0]), "colormap": self.colormap}
            settings["tile_size"] = self.tile_size
            probes_tag = named("xai/probes", name)
            for sink, key in zip(sinks, keys, strict=True):
                first = key not in self.logged_to
                images = [(t, i) for t, i in media.images if first or t != probes_tag]
                mine = dataclasses.replace(media, images=images, settings=settings if first else None)
                for job in sink.jobs(mine):
                    self.writer.submit(job)
                self.logged_to.add(key)
        except Exception as err:  # the monitor isolates it: warned once, in ``record.errors`` and ``xai/errors``
            raise RuntimeError(f"rendering the pictures failed, none logged this epoch: {err!r}") from err

    def flush(self) -> None:
        """Wait for queued media; warn about any that failed to write."""
        self.writer.flush()
        for error in self.writer.pop_errors():  # each distinct failure once; never raised, whatever the filters
            if error not in self._said:
                self._said.add(error)
                _warn.report(f"AttributionMonitor: logging images or tables failed: {error}")

    def close(self) -> None:
        """Flush (warning about media that failed to write), stop the writer thread, close the sinks. Never raises: on
        an exception path (``on_exception``) a failure here would replace the user's own exception."""
        try:
            self.flush()
        finally:
            self.writer.close()
        for sink in self._sinks.values():
            try:
                sink.close()
            except Exception as err:  # noqa: BLE001 - warned, never raised
                _warn.report(f"AttributionMonitor: closing the {type(sink.logger).__name__}'s media failed: {err!r}")

    def __getstate__(self) -> dict[str, Any]:  # picklable for ddp_spawn: loggers are found again on each rank
        return {**self.__dict__, "_sinks": {}}


def probe_drift(tracker: Any, done: ProbeExplanations) -> tuple[dict[str, Tensor | None], str]:
    """Per method each probe's rank drift against the reference (None: no reference, cut or no relevance), and the
    legend line."""
    reference = getattr(tracker, "reference", None)
    if tracker is None or not isinstance(reference, dict):
        return {}, ""
    out: dict[str, Tensor | None] = {}
    epochs = set()
    for name, explanation in done.results.items():
        stored = reference.get(name)
        if stored is None or stored.shape != explanation.raw.shape or not_compared(explanation):
            out[name] = None
            continue
        measured = getattr(tracker, "reference_drift", lambda *_: None)(name, explanation.raw)  # by ``update``
        out[name] = (
            measured if measured is not None else tracker.distances(explanation.raw.detach().float(), stored)["rank"]
        )
        epochs.add(tracker.reference_epochs.get(name))
    if not epochs:
        return out, "vs ref: rank drift against the reference epoch (none before it)"
    shown = ", ".join(str(e) for e in sorted(e for e in epochs if e is not None))
    return out, f"vs ref: rank drift (1 - Spearman of |attribution|) against epoch {shown}"


def resolved_method_settings(explainer: Any, denormalize: Denormalize = None) -> dict[str, Any]:
    """A method's ``config()`` with its resolved layer name (or "automatic ...") and its baseline in words."""
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
    """A baseline in words: zeros, the number, black (``-mean/std``), or a tensor's first values."""
    if baseline is None or not isinstance(baseline, Tensor):
        return "zeros" if baseline is None else baseline
    values = [round(float(v), 4) for v in baseline.detach().flatten()[:8].cpu()]
    shown = f"{values}" if baseline.numel() <= 8 else f"{values[:-1]}..."
    black = black_input(denormalize)
    if black is not None and black.shape == baseline.shape and torch.allclose(black, baseline.detach().cpu().float()):
        return f"black (-mean/std) {shown}"
    return f"tensor {tuple(baseline.shape)} {shown}"
