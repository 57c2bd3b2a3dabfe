"""Where one evaluation's media go, per logger in ``trainer.loggers``.

* :class:`~lightning.pytorch.loggers.TensorBoardLogger`: images (``add_image``), tables as markdown text
  (``add_text``), the summary scalars against the epoch (``add_scalar``) and, once per event file, the dashboard
  layout (``add_custom_scalars``, see :mod:`lightning_xai.visualize.dashboard`).
* :class:`~lightning.pytorch.loggers.CSVLogger`: PNG, CSV and markdown files beside ``metrics.csv``, in
  ``<log_dir>/xai/<tag>/epoch=EEEE-step=SSSSSSS.<ext>`` (e.g. ``xai/sheet/epoch=0003-step=0000120.png``,
  ``xai/predictions/epoch=0003-step=0000120.csv``) and ``<log_dir>/xai/settings.json``.
* :class:`~lightning.pytorch.loggers.WandbLogger`: ``log_image`` and ``log_table`` at the global step; the settings
  go to the run's config under ``xai``.
* :class:`~lightning.pytorch.loggers.MLFlowLogger`: ``log_image`` (an image series per tag, with its step),
  ``log_text`` for tables and texts, ``log_dict`` for the settings, as artifacts under ``xai/``.

W&B and MLflow are imported lazily (only their loggers import them); neither is a dependency. PNG files for the
CSV logger are encoded here with :mod:`zlib` (no Pillow).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from torch import Tensor

from lightning_xai.visualize.dashboard import custom_scalars_layout
from lightning_xai.visualize.media import EvaluationMedia
from lightning_xai.visualize.writer import Job

__all__ = ["MediaSink", "encode_png", "media_file_name", "sink_for", "supported"]


def encode_png(image: Tensor) -> bytes:
    """PNG bytes of a ``(3, H, W)`` uint8 image (8-bit RGB, no filter, zlib level 6).

    Example::

        >>> import torch
        >>> data = encode_png(torch.zeros(3, 2, 4, dtype=torch.uint8))
        >>> data[:8] == b"\\x89PNG\\r\\n\\x1a\\n", struct.unpack(">II", data[16:24])
        (True, (4, 2))
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"encode_png needs a (3, H, W) uint8 image, got {tuple(image.shape)}.")
    _, height, width = image.shape
    rows = image.permute(1, 2, 0).contiguous().numpy().reshape(height, width * 3)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def media_file_name(epoch: int, step: int, ext: str) -> str:
    """The file name of one evaluation's item, sortable by name.

    Example::

        >>> media_file_name(3, 120, "png")
        'epoch=0003-step=0000120.png'
    """
    return f"epoch={epoch:04d}-step={step:07d}.{ext}"


class MediaSink:
    """Turns an :class:`EvaluationMedia` into background jobs for one logger."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def jobs(self, media: EvaluationMedia, methods: list[str]) -> list[Job]:
        raise NotImplementedError


class TensorBoardSink(MediaSink):
    def __init__(self, logger: Logger) -> None:
        super().__init__(logger)
        self._layout_for: Any = None  # the SummaryWriter the layout went to (a resumed run opens a new one)

    def jobs(self, media: EvaluationMedia, methods: list[str]) -> list[Job]:
        writer: Any = self.logger.experiment  # type: ignore[attr-defined]
        step, epoch = media.step, media.epoch
        jobs: list[Job] = []
        if self._layout_for is not writer:
            self._layout_for = writer
            layout = custom_scalars_layout(methods)
            jobs.append(lambda: writer.add_custom_scalars(layout))
        if media.settings is not None:
            text = settings_markdown(media.settings)
            jobs.append(lambda: writer.add_text("xai/settings", text, global_step=step))
        for tag, image in media.images:
            jobs.append(_bind(lambda t, i: writer.add_image(t, i, global_step=step, dataformats="CHW"), tag, image))
        for tag, table in media.tables:
            jobs.append(_bind(lambda t, md: writer.add_text(t, md, global_step=step), tag, table.markdown()))
        for tag, text in media.texts:
            jobs.append(_bind(lambda t, md: writer.add_text(t, md, global_step=step), tag, text))
        summary = dict(media.summary)
        if summary:

            def scalars() -> None:
                for tag, value in summary.items():
                    writer.add_scalar(tag, value, global_step=epoch)

            jobs.append(scalars)
        return jobs


class FileSink(MediaSink):
    """Files under ``<log_dir>/xai/`` (the :class:`CSVLogger`'s directory, beside ``metrics.csv``)."""

    def jobs(self, media: EvaluationMedia, methods: list[str]) -> list[Job]:
        root = Path(str(self.logger.log_dir)) / "xai"
        name = media_file_name(media.epoch, media.step, "{ext}")
        items: list[tuple[str, str, Any]] = [(tag, "png", image) for tag, image in media.images]
        items += [(tag, "csv", table.csv()) for tag, table in media.tables]
        items += [(tag, "md", text) for tag, text in media.texts]
        jobs = [
            _bind(_write_file, root / tag.removeprefix("xai/") / name.format(ext=ext), data) for tag, ext, data in items
        ]
        if media.settings is not None:
            jobs.append(_bind(_write_file, root / "settings.json", json.dumps(media.settings, indent=2, default=str)))
        return jobs


def _write_file(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Tensor):
        path.write_bytes(encode_png(data))
    else:
        path.write_text(str(data), encoding="utf-8")


class WandbSink(MediaSink):
    def jobs(self, media: EvaluationMedia, methods: list[str]) -> list[Job]:
        logger: Any = self.logger
        step = media.step
        jobs: list[Job] = []
        if media.settings is not None:
            settings = json.loads(json.dumps(media.settings, default=str))
            jobs.append(lambda: logger.experiment.config.update({"xai": settings}, allow_val_change=True))
        for tag, image in media.images:
            array = image.permute(1, 2, 0).numpy()
            jobs.append(_bind(lambda t, a: logger.log_image(key=t, images=[a], step=step), tag, array))
        for tag, table in media.tables:
            rows = [[_plain(v) for v in row] for row in table.rows]
            jobs.append(
                _bind(lambda t, c, r: logger.log_table(key=t, columns=c, data=r, step=step), tag, table.columns, rows)
            )
        for tag, text in media.texts:
            jobs.append(
                _bind(lambda t, x: logger.log_table(key=t, columns=["message"], data=[[x]], step=step), tag, text)
            )
        return jobs


def _wandb_table(logger: Any, tag: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
    logger.log_table(key=tag, columns=columns, data=rows, step=step)


def _plain(value: Any) -> Any:
    return "" if value is None else value


class MlflowSink(MediaSink):
    def jobs(self, media: EvaluationMedia, methods: list[str]) -> list[Job]:
        logger: Any = self.logger
        step, name = media.step, media_file_name(media.epoch, media.step, "{ext}")
        jobs: list[Job] = []
        if media.settings is not None:
            settings = json.loads(json.dumps(media.settings, default=str))
            jobs.append(lambda: logger.experiment.log_dict(logger.run_id, settings, "xai/settings.json"))
        for tag, image in media.images:
            array = image.permute(1, 2, 0).numpy()
            jobs.append(_bind(lambda t, a: _mlflow_image(logger, t, a, step, name), tag, array))
        for tag, table in media.tables:
            path = f"{tag}/{name.format(ext='csv')}"
            jobs.append(_bind(lambda x, p: logger.experiment.log_text(logger.run_id, x, p), table.csv(), path))
        for tag, text in media.texts:
            path = f"{tag}/{name.format(ext='md')}"
            jobs.append(_bind(lambda x, p: logger.experiment.log_text(logger.run_id, x, p), text, path))
        return jobs


def _mlflow_image(logger: Any, tag: str, array: Any, step: int, name: str) -> None:
    """An image series (``key``/``step``, MLflow >= 2.12), else a plain artifact ``xai/<tag>/epoch=...png``."""
    try:
        logger.experiment.log_image(logger.run_id, array, key=tag, step=step)
    except TypeError:  # an MLflow without image series
        logger.experiment.log_image(logger.run_id, array, artifact_file=f"{tag}/{name.format(ext='png')}")


def _bind(fn: Callable[..., None], *args: Any) -> Job:
    return lambda: fn(*args)


def _logger_kind(logger: Logger) -> type[MediaSink] | None:
    if isinstance(logger, TensorBoardLogger):
        return TensorBoardSink
    if isinstance(logger, CSVLogger):
        return FileSink
    names = {cls.__name__ for cls in type(logger).__mro__}
    if "WandbLogger" in names:  # matched by name: importing lightning's wandb module costs nothing, wandb itself is
        return WandbSink  # only imported by the logger when it logs
    if "MLFlowLogger" in names:
        return MlflowSink
    return None


def supported(logger: Logger) -> bool:
    """True for the loggers that receive images: TensorBoard, CSV, W&B and MLflow."""
    return _logger_kind(logger) is not None


def sink_for(logger: Logger) -> MediaSink | None:
    kind = _logger_kind(logger)
    return None if kind is None else kind(logger)


def settings_markdown(settings: dict[str, Any]) -> str:
    """The run's settings as a markdown table, then the whole record as a JSON block (read back by the report).

    Example::

        >>> print(settings_markdown({"warmup_epochs": 2}))
        | setting | value |
        |---|---|
        | warmup_epochs | 2 |
        <BLANKLINE>
        ```json
        {"warmup_epochs": 2}
        ```
    """
    lines = ["| setting | value |", "|---|---|"]
    for key, value in settings.items():
        shown = json.dumps(value, default=str) if not isinstance(value, str) else value
        lines.append(f"| {key} | {shown.replace('|', '/')} |")
    return "\n".join(lines) + "\n\n```json\n" + json.dumps(settings, default=str) + "\n```"
