"""Where one evaluation's media go: TensorBoard (images, markdown, the dashboard), CSV (files like
``<log_dir>/<tag>/epoch=0003-step=0000120.jpg``), W&B (images, tables, config), MLflow (images, text, ``log_dict``)."""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger

from lightning_xai.visualize.crc import use_fast_checksum
from lightning_xai.visualize.dashboard import MAIN_RUN, SUMMARY_RUNS, custom_scalars_layout, layout_summary, named
from lightning_xai.visualize.media import EvaluationMedia, Picture
from lightning_xai.visualize.writer import Job


def media_file_name(epoch: int, step: int, ext: str, version: int = 0) -> str:
    """The file name of one evaluation's item, sortable by name; ``version`` ``k > 0`` adds ``_vk`` (an evaluation
    at the ``epoch`` and ``step`` of an earlier one, e.g. a second ``trainer.validate``: sorted after it; name order
    holds up to ``_v9``, as Lightning's ``-v1`` checkpoints do).

    Example::

        >>> media_file_name(3, 120, "jpg"), media_file_name(3, 120, "csv", version=1)
        ('epoch=0003-step=0000120.jpg', 'epoch=0003-step=0000120_v1.csv')
    """
    return f"epoch={epoch:04d}-step={step:07d}{f'_v{version}' if version else ''}.{ext}"


class UniqueNames:
    """Each evaluation's file name (``{ext}`` left to fill), never one given before or ``taken`` (already on disk,
    e.g. by the run this one resumes): two evaluations at one epoch and step get ``_v1``, ``_v2``, ... instead of
    overwriting each other's files."""

    def __init__(self) -> None:
        self._given: set[str] = set()

    def name(self, epoch: int, step: int, taken: Callable[[str], bool] = lambda name: False) -> str:
        version = 0
        while (name := media_file_name(epoch, step, "{ext}", version)) in self._given or taken(name):
            version += 1
        self._given.add(name)
        return name


class MediaSink:
    """Turns an :class:`EvaluationMedia` (its tags already named) into background jobs for one logger."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def jobs(self, media: EvaluationMedia) -> list[Job]:
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
        use_fast_checksum()  # the sheet's record: 31 -> 1 ms, which Lightning's save() of the scalars waits for

    def jobs(self, media: EvaluationMedia) -> list[Job]:
        writer: Any = self.logger.experiment  # type: ignore[attr-defined]
        jobs: list[Job] = []
        layouts = _LAYOUTS.setdefault(writer, {})
        if media.name not in layouts:  # a resumed run opens a new writer: the layout goes to its event file too
            layouts[media.name] = custom_scalars_layout(media.methods, media.name, media.rules, media.localised)
            jobs.append(partial(write_summary, writer, layout_summary(list(layouts.values())), None))
        texts = [(tag, table.markdown()) for tag, table in media.tables] + list(media.texts)
        if media.settings is not None:
            texts.insert(0, (named("xai/settings", media.name), settings_markdown(media.settings)))
        jobs += [partial(_tensorboard_image, writer, tag, image, media.step) for tag, image in media.images]
        jobs += [partial(writer.add_text, tag, text, global_step=media.step) for tag, text in texts]
        points = {run: dict(values) for run, values in media.summary.items() if values}
        if points:
            # every summary run opened at once, in one order: TensorBoard colours runs by the order they started
            runs = {run: self._run_writer(writer, run) for run in SUMMARY_RUNS if run in media.summary}
            writers = {run: writer if run == MAIN_RUN else runs[run] for run in points}

            def scalars() -> None:
                for run, values in points.items():
                    for tag, value in values.items():
                        writers[run].add_scalar(tag, value, global_step=media.epoch)
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


def write_summary(writer: Any, summary: Any, step: int | None) -> None:
    """``summary`` as one event of ``writer`` (a ``SummaryWriter``) at ``step``."""
    (writer.file_writer or writer._get_file_writer()).add_summary(summary, step)


def _tensorboard_image(writer: Any, tag: str, image: Picture, step: int) -> None:
    """An image event from the picture's JPEG bytes (encoded once for every logger)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    encoded = Summary.Image(height=image.height, width=image.width, colorspace=3, encoded_image_string=image.encoded())
    write_summary(writer, Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)


def _text_files(media: EvaluationMedia) -> list[tuple[str, str, str]]:
    """``(tag, extension, text)`` of the tables (CSV) and texts (markdown)."""
    return [(tag, "csv", table.csv()) for tag, table in media.tables] + [(tag, "md", x) for tag, x in media.texts]


class FileSink(MediaSink):
    """Files under ``<log_dir>/xai/`` (the :class:`CSVLogger`'s directory, beside ``metrics.csv``), one name per
    evaluation (:class:`UniqueNames`)."""

    def __init__(self, logger: Logger) -> None:
        super().__init__(logger)
        self.names = UniqueNames()

    def jobs(self, media: EvaluationMedia) -> list[Job]:
        log_dir = Path(str(self.logger.log_dir))
        items: list[tuple[str, str, Any]] = [(t, i.extension, i) for t, i in media.images] + _text_files(media)

        def on_disk(name: str) -> bool:
            return any((log_dir / tag / name.format(ext=ext)).exists() for tag, ext, _ in items)

        name = self.names.name(media.epoch, media.step, on_disk)
        jobs: list[Job] = [partial(_write_file, log_dir / tag / name.format(ext=ext), x) for tag, ext, x in items]
        if media.settings is not None:
            path = log_dir / (named("xai/settings", media.name) + ".json")
            jobs.append(partial(_write_file, path, json.dumps(media.settings, indent=2, default=str)))
        return jobs


def _write_file(path: Path, data: str | Picture) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data.encoded())


class WandbSink(MediaSink):
    def jobs(self, media: EvaluationMedia) -> list[Job]:
        logger: Any = self.logger
        jobs: list[Job] = []
        if media.settings is not None:
            key = "xai" if media.name is None else f"xai/{media.name}"
            jobs.append(partial(_wandb_config, logger, {key: json.loads(json.dumps(media.settings, default=str))}))
        jobs += [partial(_wandb_image, logger, tag, image, media.step) for tag, image in media.images]
        # None stays None (W&B's column of numbers takes None, refuses ""): a map without relevance has no drift
        tables = [(tag, t.columns, [list(row) for row in t.rows]) for tag, t in media.tables]
        tables += [(tag, ["message"], [[_plain(part)] for part in text.split("\n\n")]) for tag, text in media.texts]
        jobs += [partial(logger.log_table, key=tag, columns=c, data=r, step=media.step) for tag, c, r in tables]
        return jobs


def _plain(markdown: str) -> str:
    """A paragraph of the texts' markdown as W&B's table shows it, a cell of plain text: no ``**`` or backticks."""
    return markdown.replace("**", "").replace("`", "")


def _wandb_config(logger: Any, settings: dict[str, Any]) -> None:
    logger.experiment.config.update(settings, allow_val_change=True)


def _wandb_image(logger: Any, tag: str, image: Picture, step: int) -> None:
    logger.log_image(key=tag, images=[image.array()], step=step)


class MlflowSink(MediaSink):
    def __init__(self, logger: Logger) -> None:
        super().__init__(logger)
        self.names = UniqueNames()  # the text artifacts' names, one per evaluation
        self._stored_names: dict[str, set[str]] = {}  # per tag, the artifact names the run holds (see _stored)

    def jobs(self, media: EvaluationMedia) -> list[Job]:
        logger: Any = self.logger
        jobs: list[Job] = []
        if media.settings is not None:
            settings = json.loads(json.dumps(media.settings, default=str))
            jobs.append(partial(_mlflow, logger, "log_dict", settings, named("xai/settings", media.name) + ".json"))
        texts = _text_files(media)
        name: list[str] = []  # the evaluation's name, chosen by the first job on the writer thread, used by the rest
        jobs.append(lambda: name.append(self._name(texts, media.epoch, media.step)))
        jobs += [partial(self._log_image, tag, image, media.step, name) for tag, image in media.images]
        jobs += [partial(self._log_text, tag, ext, text, name) for tag, ext, text in texts]
        return jobs  # one job per upload: the writer reports a failing one and runs the others

    def _stored(self, tag: str) -> set[str]:
        """The artifact names the run holds under ``tag`` (listed once, then kept up to date)."""
        if tag not in self._stored_names:
            logger: Any = self.logger
            try:
                listed = logger.experiment.list_artifacts(logger.run_id, tag)
                self._stored_names[tag] = {Path(str(item.path)).name for item in listed}
            except Exception:  # noqa: BLE001 - unknown: only this process's own names count
                self._stored_names[tag] = set()
        return self._stored_names[tag]

    def _name(self, texts: list[tuple[str, str, str]], epoch: int, step: int) -> str:
        """The evaluation's artifact name, on the writer thread: the run's own artifacts (a resumed run, another
        logger object) count as taken."""
        return self.names.name(
            epoch, step, lambda n: any(n.format(ext=ext) in self._stored(tag) for tag, ext, _ in texts)
        )

    def _log_image(self, tag: str, image: Picture, step: int, name: list[str]) -> None:
        """An image series (the name only for an MLflow without image series)."""
        _mlflow_image(self.logger, tag, image, step, name[0])

    def _log_text(self, tag: str, ext: str, text: str, name: list[str]) -> None:
        """A table or text as the artifact ``<tag>/<name>.<ext>``."""
        _mlflow(self.logger, "log_text", text, f"{tag}/{name[0].format(ext=ext)}")
        self._stored(tag).add(name[0].format(ext=ext))


def _mlflow(logger: Any, method: str, *args: Any) -> None:
    """``MlflowClient.<method>(run_id, *args)`` (the client is made when the job runs)."""
    getattr(logger.experiment, method)(logger.run_id, *args)


def _mlflow_image(logger: Any, tag: str, image: Picture, step: int, name: str) -> None:
    """An image series (``key``/``step``, MLflow >= 2.12), else a plain artifact ``xai/<tag>/epoch=...jpg``."""
    try:
        logger.experiment.log_image(logger.run_id, image.array(), key=tag, step=step)
    except TypeError:  # an MLflow without image series
        artifact = f"{tag}/{name.format(ext=image.extension)}"
        logger.experiment.log_image(logger.run_id, image.array(), artifact_file=artifact)


#: the sinks of the loggers that take images, by the name of the logger's class (or a base class): W&B and MLflow are
#: matched by name, so that neither is imported here
SINKS = dict(TensorBoardLogger=TensorBoardSink, CSVLogger=FileSink, WandbLogger=WandbSink, MLFlowLogger=MlflowSink)


def sink_for(logger: Logger) -> MediaSink | None:
    """A new sink for ``logger``; None for a logger that takes no images (TensorBoard, CSV, W&B and MLflow do)."""
    kinds = [SINKS[cls.__name__] for cls in type(logger).__mro__ if cls.__name__ in SINKS]
    return kinds[0](logger) if kinds else None


def media_place(logger: Logger) -> str:
    """Where ``logger`` keeps the sheet and tables, in words: ``CSVLogger (files under <log_dir>/xai/)``."""
    kind = type(logger).__name__
    kinds = {cls.__name__ for cls in type(logger).__mro__}
    if "CSVLogger" in kinds:
        return f"{kind} (files under {Path(str(logger.log_dir)) / 'xai'})"
    if "WandbLogger" in kinds:
        return f"{kind} (the run's images and tables, under xai/)"
    if "MLFlowLogger" in kinds:
        return f"{kind} (the run's images and artifacts, under xai/)"
    return kind


def logger_key(logger: Logger) -> str:
    """Which logger and which of its runs: its kind and directory (TensorBoard, CSV) or version (W&B, MLflow)."""
    place = getattr(logger, "log_dir", None)
    return f"{type(logger).__name__}:{getattr(logger, 'version', None) if place is None else place}"


def settings_markdown(settings: dict[str, Any]) -> str:
    """The run's settings as a markdown table, then the whole record as a JSON block (read back by the report)."""
    lines = ["| setting | value |", "|---|---|"]
    for key, value in settings.items():
        shown = json.dumps(value, default=str) if not isinstance(value, str) else value
        lines.append(f"| {key} | {shown.replace('|', '/')} |")
    return "\n".join(lines) + "\n\n```json\n" + json.dumps(settings, default=str) + "\n```"
