"""Sends one evaluation's pictures and tables to the run's TensorBoard loggers, through the background writer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_xai.explain.run import ProbeExplanations
from lightning_xai.visualize.media import evaluation_media
from lightning_xai.visualize.render import Denormalize
from lightning_xai.visualize.writer import BackgroundWriter

if TYPE_CHECKING:
    from lightning_xai.drift.measure import Evaluation


class MediaLogger:
    """Renders an evaluation (grids on the training device, copied to the CPU once) and queues it for every
    :class:`~lightning.pytorch.loggers.TensorBoardLogger` of the trainer, on rank 0."""

    def __init__(self, colormap: str, denormalize: Denormalize, log_heatmaps: bool, background: bool) -> None:
        self.colormap, self.denormalize, self.log_heatmaps = colormap, denormalize, log_heatmaps
        self.writer = BackgroundWriter(background=background)
        #: the probes grid is logged once per run (kept in the checkpoint)
        self.probes_logged = False

    @staticmethod
    def tensorboard_loggers(trainer: Trainer) -> list[TensorBoardLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    def log(
        self,
        trainer: Trainer,
        done: ProbeExplanations,
        labels: Tensor | None,
        record: Evaluation,
        normalizations: Mapping[str, str],
    ) -> None:
        loggers = self.tensorboard_loggers(trainer) if trainer.is_global_zero else []
        if not loggers:
            return
        media = evaluation_media(
            done,
            labels,
            record,
            normalizations,
            colormap=self.colormap,
            denormalize=self.denormalize,
            log_heatmaps=self.log_heatmaps,
            include_probes=not self.probes_logged,
        )
        self.probes_logged = True
        for logger in loggers:
            experiment: Any = logger.experiment
            for job in media:
                self.writer.submit(job(experiment, record.global_step))

    def flush(self) -> None:
        """Wait for queued media; warn about any that failed to write."""
        self.writer.flush()
        for error in self.writer.pop_errors():
            rank_zero_warn(f"AttributionMonitor: logging to TensorBoard failed: {error}")

    def close(self) -> None:
        self.writer.close()
