"""What the monitor reads from the Trainer: whether its strategy lets one rank run the whole model, where
probes come from when none are given, and the training batch size that bounds Integrated Gradients' chunks."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

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
