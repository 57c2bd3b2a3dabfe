"""What the monitor reads from the Trainer: whether its strategy lets one rank run the whole model, where
probes come from when none are given, and the training batch size that bounds Integrated Gradients' chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from lightning_xai.probes import ProbeSet, collect_probes

T = TypeVar("T")

#: strategies whose parameters are sharded across ranks: no rank holds the whole model to explain
SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


def check_strategy(strategy: Any) -> None:
    """Refuse, at setup, strategies whose parameters are sharded across ranks.

    The monitor explains on rank 0 with the full model (forward and backward through every layer, with hooks
    on one of them). Under FSDP, DeepSpeed or tensor/model parallelism no rank holds the whole model and every
    forward is a collective of all ranks, so rank 0 alone cannot run it: it would hang or explain garbage.

    Example::

        >>> from lightning.pytorch.strategies import SingleDeviceStrategy
        >>> check_strategy(SingleDeviceStrategy("cpu"))
    """
    names = {cls.__name__ for cls in type(strategy).__mro__}
    sharded = next((n for n in SHARDED_STRATEGIES if n in names), None)
    if sharded is not None:
        raise ValueError(
            f"AttributionMonitor does not support `strategy={type(strategy).__name__}`: {sharded} shards the "
            "parameters across ranks, so no single rank holds the whole model that Captum must run forward and "
            "backward through, and each forward needs every rank. Train with `strategy='ddp'` (or "
            "'ddp_spawn'/single device) to monitor, or explain saved checkpoints after training."
        )


def training_batch_size(loaders: Any) -> int | None:
    """The largest ``batch_size`` among the training dataloader(s) (a loader, or a list/dict of them); None when
    none declares one (an iterable, or a batch sampler without ``batch_size``).

    Example::

        >>> training_batch_size({"a": DataLoader(range(10), batch_size=4), "b": [DataLoader(range(4), batch_size=2)]})
        4
    """
    if isinstance(loaders, DataLoader):
        size = loaders.batch_size or getattr(loaders.batch_sampler, "batch_size", None)
        return int(size) if isinstance(size, int) and size > 0 else None
    children: list[Any] = []
    if isinstance(loaders, dict):
        children = list(loaders.values())
    elif isinstance(loaders, (list, tuple)):
        children = list(loaders)
    sizes = [s for s in (training_batch_size(c) for c in children) if s is not None]
    return max(sizes) if sizes else None


def first_loader(trainer: Trainer) -> DataLoader | None:
    """The first validation dataloader (the first test dataloader under ``trainer.test``)."""
    loaders = trainer.test_dataloaders if trainer.state.fn == TrainerFn.TESTING else trainer.val_dataloaders
    if loaders is None:
        return None
    if isinstance(loaders, DataLoader):
        return loaders
    if isinstance(loaders, (list, tuple)) and loaders:
        return loaders[0] if isinstance(loaders[0], DataLoader) else None
    if isinstance(loaders, dict) and loaders:
        first = next(iter(loaders.values()))
        return first if isinstance(first, DataLoader) else None
    return None


def trainer_probes(trainer: Trainer, source: Any, num_probes: int, seed: int) -> ProbeSet | None:
    """The probes from ``source`` (``probes=``), or drawn from the first validation (test) dataloader; None when
    there is neither. Warns when a drawn set holds fewer than ``num_probes`` images."""
    if source is None:
        source = first_loader(trainer)
        if source is None:
            return None
    with torch.inference_mode(False):  # trainer.validate/test: keep probes normal (autograd-able) tensors
        testing = trainer.state.fn == TrainerFn.TESTING
        name = "test dataloader" if testing else "validation dataloader"
        probes = collect_probes(source, num_probes, seed, loader_name=name)
    if isinstance(source, (DataLoader, Dataset)) and len(probes) < num_probes:
        rank_zero_warn(
            f"AttributionMonitor: `num_probes={num_probes}` but the {probes.source} holds only {len(probes)} usable "
            f"images; using those {len(probes)}."
        )
    return probes


def on_rank_zero(trainer: Trainer, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, its result broadcast to every rank. A failure on rank 0 is broadcast too, so every rank
    raises instead of waiting in the broadcast."""
    result: Any = None
    failure: BaseException | None = None
    if trainer.is_global_zero:
        try:
            result = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised below, after the other ranks were told
            failure = err
            result = _Failure(f"{type(err).__name__}: {err}")
    if trainer.world_size > 1:
        result = trainer.strategy.broadcast(result, src=0)
    if failure is not None:
        raise failure
    if isinstance(result, _Failure):
        raise RuntimeError(f"AttributionMonitor failed on rank 0, so every rank stops: {result.message}")
    return result


class _Failure:
    def __init__(self, message: str) -> None:
        self.message = message


def log_epoch_scalars(trainer: Trainer, pl_module: LightningModule, scalars: dict[str, float]) -> None:
    """Log epoch-level scalars through ``pl_module.log`` (so every logger, ``EarlyStopping`` and
    ``ModelCheckpoint`` see them). They are identical on every rank already; under DDP a max-reduce keeps them
    exact (and is what Lightning expects of epoch-level logs)."""
    distributed = trainer.world_size > 1
    for key, value in scalars.items():
        pl_module.log(
            key,
            value,
            on_step=False,
            on_epoch=True,
            sync_dist=distributed,
            reduce_fx="max" if distributed else "mean",
            add_dataloader_idx=False,
        )
