"""Sends one evaluation's pictures and tables to every logger of the run that takes them (TensorBoard, CSV, W&B,
MLflow: :mod:`lightning_xai.visualize.loggers`), through the background writer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_xai.explain.run import ProbeExplanations
from lightning_xai.visualize.dashboard import summary_scalars
from lightning_xai.visualize.loggers import MediaSink, sink_for, supported
from lightning_xai.visualize.media import evaluation_media
from lightning_xai.visualize.render import Denormalize
from lightning_xai.visualize.sheet import DEFAULT_TILE_SIZE
from lightning_xai.visualize.writer import BackgroundWriter

if TYPE_CHECKING:
    from lightning_xai.drift.measure import Evaluation


class MediaLogger:
    """Renders an evaluation (the sheet and the grids on the training device, copied to the CPU once) and queues
    it for every logger of the trainer that takes images, on rank 0.

    It finds the :class:`~lightning_xai.AttributionMonitor` that owns it among ``trainer.callbacks`` to caption
    the sheet with each probe's drift against the reference maps and to describe the run's settings.
    """

    def __init__(
        self,
        colormap: str,
        denormalize: Denormalize,
        log_heatmaps: bool,
        background: bool,
        tile_size: int = DEFAULT_TILE_SIZE,
    ) -> None:
        if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 16:
            raise ValueError(f"`tile_size` must be an int >= 16 (pixels per sheet tile), got {tile_size!r}.")
        self.colormap, self.denormalize, self.log_heatmaps = colormap, denormalize, log_heatmaps
        self.tile_size = tile_size
        self.writer = BackgroundWriter(background=background)
        #: the probes grid and the settings are logged once per run (kept in the checkpoint)
        self.probes_logged = False
        self._sinks: dict[int, MediaSink] = {}

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

    def owner(self, trainer: Trainer) -> Any:
        """The monitor among ``trainer.callbacks`` whose media logger this is (None when used on its own)."""
        return next((cb for cb in trainer.callbacks if getattr(cb, "media", None) is self), None)  # type: ignore[attr-defined]

    def log(
        self,
        trainer: Trainer,
        done: ProbeExplanations,
        labels: Tensor | None,
        record: Evaluation,
        normalizations: Mapping[str, str],
    ) -> None:
        sinks = self.sinks(trainer) if trainer.is_global_zero else []
        if not sinks:
            return
        try:
            self._log(trainer, sinks, done, labels, record, normalizations)
        except Exception as err:  # noqa: BLE001 - pictures must never stop training
            rank_zero_warn(f"AttributionMonitor: rendering the pictures failed, none logged this epoch: {err!r}")

    def _log(
        self,
        trainer: Trainer,
        sinks: list[MediaSink],
        done: ProbeExplanations,
        labels: Tensor | None,
        record: Evaluation,
        normalizations: Mapping[str, str],
    ) -> None:
        owner = self.owner(trainer)
        drift, note = probe_drift(owner, done)
        threshold = getattr(getattr(owner, "drift", None), "probe_threshold", None)
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
            alert_messages=[a.message for a in record.alerts],
            colormap=self.colormap,
            denormalize=self.denormalize,
            log_heatmaps=self.log_heatmaps,
            include_probes=not self.probes_logged,
            tile_size=self.tile_size,
            drift=drift,
            drift_note=note,
            probe_threshold=threshold,
            title=f"epoch {record.epoch}   step {record.global_step}",
        )
        methods = list(normalizations)
        rules = getattr(getattr(owner, "tracker", None), "rules", ())
        media.summary = summary_scalars(record.scalars, record.alerts, methods, rules)
        if not self.probes_logged:
            media.settings = run_settings(owner, self, int(done.inputs.shape[0]))
        self.probes_logged = True
        for sink in sinks:
            for job in sink.jobs(media, methods):
                self.writer.submit(job)

    def flush(self) -> None:
        """Wait for queued media; warn about any that failed to write."""
        self.writer.flush()
        for error in self.writer.pop_errors():
            rank_zero_warn(f"AttributionMonitor: logging images or tables failed: {error}")

    def close(self) -> None:
        self.writer.close()

    def __getstate__(self) -> dict[str, Any]:  # picklable for ddp_spawn: loggers are found again on each rank
        state = self.__dict__.copy()
        state["_sinks"] = {}
        return state


def probe_drift(owner: Any, done: ProbeExplanations) -> tuple[dict[str, Tensor | None], str]:
    """Per method, each probe's rank drift (1 - Spearman of |A|) against the owner's reference maps (None before
    the reference epoch, or for a map the time budget cut), and the legend line that says so."""
    tracker = getattr(owner, "drift", None)
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


def run_settings(owner: Any, media: MediaLogger, num_probes: int) -> dict[str, Any]:
    """The monitor's settings as primitives (what the report shows as the run's settings)."""
    settings: dict[str, Any] = {}
    if owner is not None:
        tracker, detector = getattr(owner, "drift", None), getattr(owner, "detector", None)
        on_drift = getattr(owner, "on_drift", None)
        settings.update(
            {
                "methods": {e.name: e.config() for e in getattr(owner, "explainers", [])},
                "num_probes": num_probes,
                "target": str(getattr(owner, "target", "")),
                "every_n_epochs": getattr(owner, "every_n_epochs", None),
                "warmup_epochs": getattr(tracker, "warmup_epochs", None),
                "reference_epoch": getattr(tracker, "reference_epoch", None),
                "probe_threshold": getattr(tracker, "probe_threshold", None),
                "topk": getattr(tracker, "topk", None),
                "detector": None if detector is None else detector.config(),
                "drift_rules": [dict(vars(r)) for r in getattr(getattr(owner, "tracker", None), "rules", [])],
                "on_drift": on_drift if isinstance(on_drift, str) else getattr(on_drift, "__name__", "callable"),
                "max_seconds_per_epoch": getattr(owner, "max_seconds_per_epoch", None),
            }
        )
    settings.update({"num_probes": num_probes, "colormap": media.colormap, "tile_size": media.tile_size})
    return settings
