"""The monitor's mark of a resumed fit in the TensorBoard runs it logs to: where the fit starts again (the step of its
checkpoint). The report reads it back (:mod:`lightning_xai.report.restarts`) to leave out the monitor's evaluations of
an earlier, abandoned run at the steps the resumed fit does again; TensorBoard shows nothing of it (a plugin of its
own), and nothing of the user's own data is touched (Lightning writes no ``SessionLog.START`` purge marker)."""

from __future__ import annotations

import json
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai.visualize.dashboard import named
from lightning_xai.visualize.loggers import write_summary

#: the mark's tag (a named monitor's: ``xai/<name>/fit_start``) and the plugin it is filed under (none TensorBoard has)
FIT_START_TAG, PLUGIN = "xai/fit_start", "lightning_xai"


def fit_start(trainer: Trainer) -> dict[str, int] | None:
    """Where a fit resumed from a checkpoint starts, once Lightning restored its loops (``on_train_start``): the
    global step (images and texts are logged at it), Lightning's logging step (scalars) and the epoch (the summary
    series); None for a fit that starts afresh."""
    if getattr(trainer, "ckpt_path", None) is None or trainer.global_step == 0:  # a tuner's restore: step 0
        return None
    step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)  # Lightning's
    return {"global_step": int(trainer.global_step), "step": int(step), "epoch": int(trainer.current_epoch)}


def mark_fit_start(trainer: Trainer, name: str | None) -> None:
    """Write the mark of a resumed fit (:func:`fit_start`) to every TensorBoard logger (rank 0); nothing for a fit
    that starts afresh. Written at once, before anything the resumed fit logs."""
    start = fit_start(trainer)
    if start is None or not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            write_summary(logger.experiment, mark_summary(start, name), start["global_step"])


def mark_summary(start: dict[str, int], name: str | None) -> Any:
    """The mark as a TensorBoard summary: a JSON string filed under :data:`PLUGIN`."""
    from tensorboard.compat.proto import types_pb2
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto

    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN))
    tensor = TensorProto(dtype=types_pb2.DT_STRING, string_val=[json.dumps(start).encode("utf-8")])
    return Summary(value=[Summary.Value(tag=named(FIT_START_TAG, name), metadata=metadata, tensor=tensor)])


def read_mark(tensor_proto: Any) -> dict[str, int]:
    """The mark's fields back from its tensor (:func:`mark_summary`).

    Example::

        >>> read_mark(mark_summary({"global_step": 8, "step": 7, "epoch": 2}, None).value[0].tensor)
        {'global_step': 8, 'step': 7, 'epoch': 2}
    """
    return {k: int(v) for k, v in json.loads(tensor_proto.string_val[0].decode("utf-8")).items()}
