"""Where one evaluation's media go, per logger in ``trainer.loggers``. A named monitor's tags, files and keys are
``xai/<name>/...`` (``xai/<name>/sheet``, ``<log_dir>/xai/<name>/settings.json``, ...).

* :class:`~lightning.pytorch.loggers.TensorBoardLogger`: images, tables as markdown text (``add_text``), the summary
  series against the epoch (in the runs ``xai-score``, ``xai-threshold``, ``xai-alert`` inside the logger's directory,
  one colour each: :mod:`lightning_xai.visualize.dashboard`) and, once per event file, the dashboard layout of every
  monitor that writes to it.
* :class:`~lightning.pytorch.loggers.CSVLogger`: PNG, CSV and markdown files beside ``metrics.csv``, in
  ``<log_dir>/<tag>/epoch=EEEE-step=SSSSSSS.<ext>`` (e.g. ``xai/sheet/epoch=0003-step=0000120.png``,
  ``xai/predictions/epoch=0003-step=0000120.csv``) and ``<log_dir>/xai/settings.json``.
* :class:`~lightning.pytorch.loggers.WandbLogger`: ``log_image`` and ``log_table`` at the global step; the settings
  go to the run's config under ``xai`` (``xai/<name>``).
* :class:`~lightning.pytorch.loggers.MLFlowLogger`: ``log_image`` (an image series per tag, with its step),
  ``log_text`` for tables and texts, ``log_dict`` for the settings, as artifacts under ``xai/``.

W&B and MLflow are imported lazily (only their loggers import them); neither is a dependency.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from lightning_xai.visualize.dashboard import MAIN_RUN, SUMMARY_RUNS, custom_scalars_layout, layout_summary, named
from lightning_xai.visualize.media import EvaluationMedia, Picture
from lightning_xai.visualize.writer import Job

__all__ = ["MediaSink", "logger_key", "media_file_name", "sink_for", "supported"]


def media_file_name(epoch: int, step: int, ext: str) -> str:
    """The file name of one evaluation's item, sortable by name.

    Example::

        >>> media_file_name(3, 120, "png")
        'epoch=0003-step=0000120.png'
    """
    return f"epoch={epoch:04d}-step={step:07d}.{ext}"


class MediaSink:
    """Turns an :class:`EvaluationMedia` into background jobs for one logger.

    ``jobs`` gets the media with a named monitor's tags already prefixed (``xai/<name>/...``); ``name`` prefixes what
    the sink names itself (settings file or key, dashboard layout), ``summary`` holds the epoch-level summary series
    per TensorBoard run (:func:`~lightning_xai.visualize.dashboard.summary_scalars`) and ``rules`` the monitor's
    :class:`~lightning_xai.DriftRule` s (charts of the layout).
    """

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def jobs(
        self,
        media: EvaluationMedia,
        methods: list[str],
        *,
        name: str | None = None,
        summary: Mapping[str, Mapping[str, float]] | None = None,
        rules: Sequence[Any] = (),
    ) -> list[Job]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sink opened itself (nothing by default)."""


#: per SummaryWriter, the layout of every monitor that writes to it (TensorBoard shows the last layout of a run only)
_LAYOUTS: weakref.WeakKeyDictionary[Any, dict[str | None, Any]] = weakref.WeakKeyDictionary()


class TensorBoardSink(MediaSink):
    def __init__(self, logger: Logger) -> None:
        super().__init__(logger)
        self._runs: dict[str, Any] = {}  # the summary runs' SummaryWriters (xai-score, ...), per logger directory
        self._runs_for: Any = None

    def jobs(
        self,
        media: EvaluationMedia,
        methods: list[str],
        *,
        name: str | None = None,
        summary: Mapping[str, Mapping[str, float]] | None = None,
        rules: Sequence[Any] = (),
    ) -> list[Job]:
        writer: Any = self.logger.experiment  # type: ignore[attr-defined]
        step, epoch = media.step, media.epoch
        jobs: list[Job] = []
        layouts = _LAYOUTS.setdefault(writer, {})
        if name not in layouts:  # a resumed run opens a new writer: the layout goes to its event file too
            layouts[name] = custom_scalars_layout(methods, name, rules)
            event = layout_summary(list(layouts.values()))
            jobs.append(lambda: _write_summary(writer, event, None))
        texts = [(tag, table.markdown()) for tag, table in media.tables] + list(media.texts)
        if media.settings is not None:
            texts.insert(0, (named("xai/settings", name), settings_markdown(media.settings)))
        for tag, image in media.images:
            jobs.append(_bind(_tensorboard_image, writer, tag, image, step))
        for tag, text in texts:
            jobs.append(_bind(lambda t, md: writer.add_text(t, md, global_step=step), tag, text))
        points = {run: dict(values) for run, values in (summary or {}).items() if values}
        if points:
            # every summary run opened at once, in one order: TensorBoard colours runs by the order they started
            # (score blue, alert red, threshold light blue with its default palette)
            runs = {run: self._run_writer(writer, run) for run in SUMMARY_RUNS if summary and run in summary}
            writers = {run: writer if run == MAIN_RUN else runs[run] for run in points}

            def scalars() -> None:
                for run, values in points.items():
                    for tag, value in values.items():
                        writers[run].add_scalar(tag, value, global_step=epoch)
                    if run != MAIN_RUN:
                        writers[run].flush()

            jobs.append(scalars)
        return jobs

    def _run_writer(self, writer: Any, run: str) -> Any:
        """The SummaryWriter of the summary run ``run`` inside the logger's directory (a new one after a resume)."""
        if self._runs_for is not writer:
            self.close()
            self._runs_for = writer
        if run not in self._runs:
            from torch.utils.tensorboard import SummaryWriter

            self._runs[run] = SummaryWriter(str(Path(writer.log_dir) / run))
        return self._runs[run]

    def close(self) -> None:
        for run_writer in self._runs.values():
            run_writer.close()
        self._runs = {}


def _write_summary(writer: Any, summary: Any, step: int | None) -> None:
    file_writer = writer.file_writer if writer.file_writer is not None else writer._get_file_writer()
    file_writer.add_summary(summary, step)


def _tensorboard_image(writer: Any, tag: str, image: Picture, step: int) -> None:
    """An image event from the picture's PNG bytes (encoded once for every logger)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    encoded = Summary.Image(height=image.height, width=image.width, colorspace=3, encoded_image_string=image.png())
    _write_summary(writer, Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)


def _png(image: Picture) -> bytes:
    """A picture's PNG bytes, encoded once for every logger."""
    return image.png()


def _array(image: Picture) -> Any:
    """A picture's ``(H, W, 3)`` uint8 array, composed once for every logger."""
    return image.array()


class FileSink(MediaSink):
    """Files under ``<log_dir>/xai/`` (the :class:`CSVLogger`'s directory, beside ``metrics.csv``)."""

    def jobs(
        self,
        media: EvaluationMedia,
        methods: list[str],
        *,
        name: str | None = None,
        summary: Mapping[str, Mapping[str, float]] | None = None,
        rules: Sequence[Any] = (),
    ) -> list[Job]:
        log_dir = Path(str(self.logger.log_dir))
        file_name = media_file_name(media.epoch, media.step, "{ext}")
        items: list[tuple[str, str, Any]] = [(tag, "png", image) for tag, image in media.images]
        items += [(tag, "csv", table.csv()) for tag, table in media.tables]
        items += [(tag, "md", text) for tag, text in media.texts]
        jobs = [_bind(_write_file, log_dir / tag / file_name.format(ext=ext), data) for tag, ext, data in items]
        if media.settings is not None:
            path = log_dir / (named("xai/settings", name) + ".json")
            jobs.append(_bind(_write_file, path, json.dumps(media.settings, indent=2, default=str)))
        return jobs


def _write_file(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(_png(data))


class WandbSink(MediaSink):
    def jobs(
        self,
        media: EvaluationMedia,
        methods: list[str],
        *,
        name: str | None = None,
        summary: Mapping[str, Mapping[str, float]] | None = None,
        rules: Sequence[Any] = (),
    ) -> list[Job]:
        logger: Any = self.logger
        step = media.step
        jobs: list[Job] = []
        if media.settings is not None:
            settings = json.loads(json.dumps(media.settings, default=str))
            key = "xai" if name is None else f"xai/{name}"
            jobs.append(lambda: logger.experiment.config.update({key: settings}, allow_val_change=True))
        for tag, image in media.images:
            jobs.append(_bind(lambda t, i: logger.log_image(key=t, images=[_array(i)], step=step), tag, image))
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


def _plain(value: Any) -> Any:
    return "" if value is None else value


class MlflowSink(MediaSink):
    def jobs(
        self,
        media: EvaluationMedia,
        methods: list[str],
        *,
        name: str | None = None,
        summary: Mapping[str, Mapping[str, float]] | None = None,
        rules: Sequence[Any] = (),
    ) -> list[Job]:
        logger: Any = self.logger
        step, file_name = media.step, media_file_name(media.epoch, media.step, "{ext}")
        jobs: list[Job] = []
        if media.settings is not None:
            settings = json.loads(json.dumps(media.settings, default=str))
            where = named("xai/settings", name) + ".json"
            jobs.append(_bind(lambda s, p: logger.experiment.log_dict(logger.run_id, s, p), settings, where))
        for tag, image in media.images:
            jobs.append(_bind(lambda t, i: _mlflow_image(logger, t, _array(i), step, file_name), tag, image))
        for tag, table in media.tables:
            path = f"{tag}/{file_name.format(ext='csv')}"
            jobs.append(_bind(lambda x, p: logger.experiment.log_text(logger.run_id, x, p), table.csv(), path))
        for tag, text in media.texts:
            path = f"{tag}/{file_name.format(ext='md')}"
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


def logger_key(logger: Logger) -> str:
    """Which logger and which of its runs (version): its kind and directory (TensorBoard, CSV) or run id (W&B,
    MLflow). A resumed fit that logs to a new version gets a new key.

    Example::

        >>> logger_key(CSVLogger("logs", name="csv", version=3))
        'CSVLogger:logs/csv/version_3'
    """
    place = getattr(logger, "log_dir", None)
    if place is None:
        place = getattr(logger, "version", None)
    return f"{type(logger).__name__}:{place}"


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
