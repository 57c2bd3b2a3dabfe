"""A 2-process CPU (gloo) DDP fit with AttributionMonitor; every rank writes what it saw to ``<out>/rank<r>.json``.

Used by ``tests/test_compat_ddp.py``: ``strategy="ddp"`` re-executes ``sys.argv`` for the other ranks, so it runs
as ``python tests/ddp_run.py --out DIR --strategy ddp --scenario stop`` in a subprocess; ``ddp_spawn`` calls
:func:`run` in-process. Scenarios:

- ``stop``: ``on_drift="stop"`` with a rule that fires at epoch 2; a passive EarlyStopping on a drift key.
- ``earlystop``: ``on_drift="warn"``; an EarlyStopping on a drift key that stops after epoch 2.
- ``fail``: the monitor raises on rank 0 at epoch 1 (outside the per-method error handling).
- ``bench``: timings for docs/performance.md: the monitor's sharded explanation on resnet18 (per rank: the CPU and
  wall seconds of the validation-end hooks, the monitor's ``explain_seconds``); run it with ``--devices 1`` and ``2``.
- ``validate``: ``trainer.validate`` of a fixed model; rank 0 saves the maps it measured to ``<out>/maps.pt`` (also
  with ``--devices 1``: the maps of one process, to compare); every rank what ``validate`` returned, how many
  ``all_reduce`` calls it made from the epoch-end hooks on (reducing logged values) and Lightning's advice to log the
  monitor's keys with ``sync_dist``, if any.
- ``rankfail``: Integrated Gradients fails on rank 1 only, at every evaluation (after the setup check); each rank
  records the monitor's warnings it showed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from datetime import timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning.pytorch as L  # noqa: E402
import torch  # noqa: E402
from conftest import TinyCNN, loaders  # noqa: E402
from lightning.pytorch.callbacks import Callback, EarlyStopping  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from lightning.pytorch.strategies import DDPStrategy  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from lightning_xai import AttributionMonitor, Display, DriftPolicy, DriftRule, IntegratedGradients  # noqa: E402

DRIFT_KEY = "xai/gradcam/drift/rank_vs_reference/median"
SHOWN: list[str] = []  # the monitor's warnings this rank showed (scenario rankfail)


class RankOneFails(IntegratedGradients):
    """Integrated Gradients that raises on rank 1 once :class:`ArmFailure` has armed it (after the setup check)."""

    armed = False

    def explain(self, *args: Any, **kwargs: Any) -> Any:
        if RankOneFails.armed and torch.distributed.is_initialized() and torch.distributed.get_rank() == 1:
            raise RuntimeError("injected failure on rank 1")
        return super().explain(*args, **kwargs)


class ArmFailure(Callback):
    """Placed after the monitor: arms :class:`RankOneFails` once the monitor's setup check has run."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        RankOneFails.armed = True


def keep_warnings() -> None:
    """Show every warning (the test's environment ignores them) and keep the monitor's in :data:`SHOWN`."""
    warnings.simplefilter("always")
    shown = warnings.showwarning

    def keep(message: Any, *args: Any, **kwargs: Any) -> None:
        if str(message).startswith("AttributionMonitor"):
            SHOWN.append(str(message))
        shown(message, *args, **kwargs)

    warnings.showwarning = keep


class Stamp(Callback):
    """Placed before the monitor: remembers when its ``on_validation_epoch_end`` started."""

    def __init__(self) -> None:
        self.started = 0.0
        self.cpu_started = 0.0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()


class Recorder(Callback):
    """Placed after the monitor: records what this rank saw and writes it as JSON at the end."""

    def __init__(self, out: str, monitor: AttributionMonitor, stamp: Stamp, stopper: EarlyStopping | None) -> None:
        self.out = out
        self.monitor = monitor
        self.stamp = stamp
        self.stopper = stopper
        self.hook_seconds: list[float] = []
        self.hook_cpu_seconds: list[float] = []
        self.validations: list[dict[str, Any]] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.hook_seconds.append(time.perf_counter() - self.stamp.started)
        self.hook_cpu_seconds.append(time.process_time() - self.stamp.cpu_started)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("xai/")}
        self.validations.append({"epoch": trainer.current_epoch, "metrics": metrics})

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, None)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.write(trainer, exception)

    def write(self, trainer: L.Trainer, exception: BaseException | None) -> None:
        monitor = self.monitor
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "exception": None if exception is None else f"{type(exception).__name__}: {exception}",
            "current_epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "should_stop": trainer.should_stop,
            "evaluations": monitor.evaluations,
            "history": [{"epoch": h.epoch, "scalars": h.scalars, "errors": h.errors} for h in monitor.history],
            "explain_seconds": [h.explain_seconds for h in monitor.history],
            "alerts": [a.message for a in monitor.alerts],
            "computed_here": sorted(monitor.drift_tracker.previous),  # only where the maps were computed
            "validations": self.validations,
            "callback_metric_keys": sorted(k for k in trainer.callback_metrics if k.startswith("xai/")),
            "hook_seconds": self.hook_seconds,
            "hook_cpu_seconds": self.hook_cpu_seconds,
            "warnings": SHOWN,
            "early_stopping": None
            if self.stopper is None
            else {
                "best_score": float(self.stopper.best_score),
                "wait_count": self.stopper.wait_count,
                "stopped_epoch": self.stopper.stopped_epoch,
            },
        }
        with open(os.path.join(self.out, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump(record, f)


class FailingMonitor(AttributionMonitor):
    """Raises on rank 0 at epoch 1, after the explanations, where no per-method error handling applies."""

    def _measure_and_log(self, trainer: L.Trainer, pl_module: L.LightningModule, done: Any) -> Any:
        entry = super()._measure_and_log(trainer, pl_module, done)
        if trainer.current_epoch == 1:
            raise RuntimeError("injected failure on rank 0")
        return entry


class ResNetModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.net = resnet18(num_classes=4)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def bench_loaders(num_probes: int) -> tuple[Any, Any]:
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.rand(16 + num_probes, 3, 32, 32, generator=g)
    y = torch.arange(16 + num_probes) % 4
    train = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)
    return train, DataLoader(TensorDataset(x[16:], y[16:]), batch_size=num_probes)


def count_all_reduce() -> list[int]:
    """From now on, one entry per ``torch.distributed.all_reduce`` call in this process (the list returned)."""
    calls: list[int] = []
    original = torch.distributed.all_reduce

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    torch.distributed.all_reduce = counted  # type: ignore[assignment]
    return calls


class EpochEnd(Callback):
    """Placed before the monitor: how many ``all_reduce`` calls there were when the epoch-end hooks began."""

    def __init__(self, calls: list[int]) -> None:
        self.calls, self.at = calls, None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.at = len(self.calls)


def run(args: argparse.Namespace) -> AttributionMonitor:
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    L.seed_everything(0, verbose=False)
    stamp = Stamp()
    stopper: EarlyStopping | None = None
    rule = DriftRule(threshold=0.0, patience=2 if args.scenario == "stop" else 1)
    kwargs: dict[str, Any] = dict(
        num_probes=args.probes,
        methods=("gradcam", IntegratedGradients(n_steps=args.ig_steps)),
        display=Display(log_grids=True),
    )
    policy: dict[str, Any] = dict(warmup_epochs=0, rules=(rule,), detector=None, cooldown=0)
    if args.scenario == "stop":
        monitor = AttributionMonitor(drift=DriftPolicy(on_drift="stop", **policy), **kwargs)
        stopper = EarlyStopping(
            monitor=DRIFT_KEY, mode="min", patience=100, strict=False, check_on_train_epoch_end=False
        )
    elif args.scenario == "earlystop":
        monitor = AttributionMonitor(drift=DriftPolicy(on_drift="warn", **policy), **kwargs)
        # min_delta=1 > any drift: no value after the first counts as an improvement -> stops after patience=2
        stopper = EarlyStopping(
            monitor=DRIFT_KEY, mode="min", min_delta=1.0, patience=2, strict=False, check_on_train_epoch_end=False
        )
    elif args.scenario == "fail":
        monitor = FailingMonitor(drift=DriftPolicy(**policy), **kwargs)
    elif args.scenario == "rankfail":
        keep_warnings()
        kwargs["methods"] = ("gradcam", RankOneFails(n_steps=args.ig_steps))
        monitor = AttributionMonitor(drift=DriftPolicy(**policy), **kwargs)
    else:
        monitor = AttributionMonitor(drift=DriftPolicy(**policy), **kwargs)
    recorder = Recorder(args.out, monitor, stamp, stopper)
    callbacks: list[Callback] = [stamp, monitor, recorder] + ([stopper] if stopper is not None else [])
    callbacks += [ArmFailure()] if args.scenario == "rankfail" else []
    if args.scenario == "bench":
        model: L.LightningModule = ResNetModule()
        train, val = bench_loaders(args.probes)
    else:
        model = TinyCNN()
        train, val = loaders()
    start_method = "spawn" if args.strategy == "ddp_spawn" else "popen"
    strategy: Any = (
        DDPStrategy(process_group_backend="gloo", start_method=start_method, timeout=timedelta(seconds=90))
        if args.devices > 1
        else "auto"
    )
    if args.scenario == "validate":
        torch.manual_seed(0)
        model, (_, val) = TinyCNN(), loaders()
        reduced = count_all_reduce()
        mark = EpochEnd(reduced)
        validator = L.Trainer(
            accelerator="cpu",
            devices=args.devices,
            strategy=strategy,
            logger=False,
            callbacks=[mark, *callbacks],
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
        )
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            (returned,) = validator.validate(model, val, verbose=False)
        told = [str(w.message) for w in said if "sync_dist" in str(w.message) and "xai/" in str(w.message)]
        after = len(reduced) - (mark.at or 0)  # from the epoch-end hooks on: the monitor logs, Lightning reduces
        seen = {"all_reduce": after, "returned": {k: v for k, v in returned.items() if k.startswith("xai/")}}
        with open(f"{args.out}/rank{validator.global_rank}_validate.json", "w") as f:
            json.dump({**seen, "sync_advice": told}, f)
        ig = next(e for e in monitor.explainers if isinstance(e, IntegratedGradients))
        with open(f"{args.out}/rank{validator.global_rank}_ig_batch.json", "w") as f:
            json.dump(ig.last_batch_size, f)  # samples per IG pass: this rank's probes x steps
        if validator.is_global_zero:
            maps = {name: t.cpu() for name, t in monitor.drift_tracker.previous.items()}
            torch.save({"maps": maps, "seconds": [h.explain_seconds for h in monitor.history]}, f"{args.out}/maps.pt")
        return monitor
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy=strategy,
        max_epochs=args.epochs,
        logger=TensorBoardLogger(os.path.join(args.out, "logs"), name="run"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        deterministic=True,
        use_distributed_sampler=args.scenario != "bench",
    )
    trainer.fit(model, train, val)
    return monitor


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--strategy", default="ddp", choices=["ddp", "ddp_spawn"])
    parser.add_argument(
        "--scenario", default="stop", choices=["stop", "earlystop", "fail", "bench", "validate", "rankfail"]
    )
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--ig-steps", type=int, default=4)
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse())
