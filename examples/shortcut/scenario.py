"""The shortcut scenario shared by the demo and the detection benchmark.

A small CNN learns clean digits; at ``onset_epoch`` the training data changes: the corner decoy becomes
predictive of the label while a share of the digits stops matching it (``content_noise``), as when a noisier
data source is mixed in. A model that starts reading the decoy predicts the *decoy's* class on validation
images whose decoy was swapped for another class's — that reliance signal needs no attributions, so it is the
ground truth the monitor's alerts are judged against.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from examples.shortcut.decoy_digits import DecoyDigits, DecoySpec, mismatched_decoy_images
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.monitor import AttributionMonitor
from lightning_xai.settings import Display


@dataclass(frozen=True)
class ShortcutConfig:
    """One run of the scenario.

    Args:
        seed: seeds the data split, decoys, model init and shuffling.
        epochs: total epochs.
        onset_epoch: first epoch trained on the changed data (None: the data never changes).
        predictive: after the onset the decoy encodes the label (False: stays random — a control).
        content_noise: share of training digits replaced by another class's digit after the onset.
        lr: Adam learning rate; ``lr_drop_epoch`` divides it by 10 from that epoch on (a control).
        num_probes_per_class: probes per class, drawn from the validation split (fixed images).
    """

    seed: int = 0
    epochs: int = 10
    onset_epoch: int | None = 4
    predictive: bool = True
    content_noise: float = 0.5
    lr: float = 1e-3
    lr_drop_epoch: int | None = None
    batch_size: int = 64
    num_probes_per_class: int = 1


class DigitsCNN(L.LightningModule):
    """Three conv blocks (32→16→8) and a linear head: Grad-CAM explains ``features`` at 8×8."""

    def __init__(self, lr: float = 2e-3, num_classes: int = 10) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(1, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2), block(64, 64))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        # Inputs are in [0, 1] with a black background; standardising them makes the zero padding of the
        # convolutions differ from the background, so the network can tell where in the image a patch is.
        return self.head(self.features((x - 0.3) / 0.4))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", nn.functional.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class _Schedule(L.Callback):
    """Changes the training data at the onset and drops the learning rate when asked."""

    def __init__(self, train: DecoyDigits, config: ShortcutConfig) -> None:
        self.train, self.config = train, config

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        cfg, epoch = self.config, trainer.current_epoch
        if cfg.onset_epoch is not None and epoch == cfg.onset_epoch:
            self.train.set_predictive(cfg.predictive, content_noise=cfg.content_noise)
        if cfg.lr_drop_epoch is not None and epoch == cfg.lr_drop_epoch:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = group["lr"] / 10


@dataclass
class EpochRecord:
    epoch: int
    clean_acc: float
    mismatched_acc: float  # predicts the digit although the decoy says another class
    decoy_rate: float  # predicts the decoy's class: reliance on the shortcut
    scalars: dict[str, float] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)


class _Reliance(L.Callback):
    """Measures, each validation epoch, accuracy on clean and on mismatched-decoy validation images."""

    def __init__(self, val: DecoyDigits, monitor: AttributionMonitor, seed: int) -> None:
        self.val, self.monitor = val, monitor
        self.mismatched, self.decoy_classes = mismatched_decoy_images(
            val.images, val.labels, val.spec, torch.Generator().manual_seed(seed + 1)
        )
        self.records: list[EpochRecord] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        device = pl_module.device
        with training_state_guard(pl_module, device), torch.no_grad():
            clean = pl_module(self.val.images.to(device)).argmax(1).cpu()
            swapped = pl_module(self.mismatched.to(device)).argmax(1).cpu()
        last = self.monitor.history[-1] if self.monitor.history else None
        alerts = [f"{a.method}:{a.metric}" for a in (last.alerts if last else [])]
        self.records.append(
            EpochRecord(
                epoch=trainer.current_epoch,
                clean_acc=float((clean == self.val.labels).float().mean()),
                mismatched_acc=float((swapped == self.val.labels).float().mean()),
                decoy_rate=float((swapped == self.decoy_classes).float().mean()),
                scalars=dict(last.scalars if last else {}),
                alerts=alerts,
            )
        )


def probe_indices(labels: Tensor, per_class: int, seed: int) -> Tensor:
    """``per_class`` validation indices per class, deterministic from ``seed``, ordered by class."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in sorted(set(labels.tolist())):
        idx = torch.nonzero(labels == c).flatten()
        chosen.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    return torch.cat(chosen)


def run_shortcut_scenario(
    config: ShortcutConfig,
    logdir: str | None = None,
    monitor_kwargs: dict[str, Any] | None = None,
    version: int | str | None = None,
) -> tuple[list[EpochRecord], AttributionMonitor]:
    """Train one run of the scenario with an :class:`AttributionMonitor` at its defaults.

    Only what a user would pass is given to the monitor: the probes (fixed validation images with labels),
    their decoy masks for the localisation scalars, and how to display them. With ``logdir``, the run goes to
    ``<logdir>/version_<n>`` (``version``; None: the next free one, so a re-run never mixes with an earlier run).
    ``monitor_kwargs`` are further :class:`AttributionMonitor` arguments; the decoy masks join their ``display=``.
    """
    L.seed_everything(config.seed, verbose=False)
    spec = DecoySpec()
    train = DecoyDigits("train", spec=spec, seed=config.seed)
    val = DecoyDigits("val", spec=spec, seed=config.seed)
    idx = probe_indices(val.labels, config.num_probes_per_class, config.seed)
    kwargs = dict(monitor_kwargs or {})
    display = replace(kwargs.pop("display", None) or Display(), probe_masks=val.masks[idx])
    monitor = AttributionMonitor(probes=(val.images[idx], val.labels[idx]), display=display, **kwargs)
    reliance = _Reliance(val, monitor, config.seed)
    logger: TensorBoardLogger | bool = TensorBoardLogger(logdir, name="", version=version) if logdir else False
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[_Schedule(train, config), monitor, reliance],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(
        DigitsCNN(lr=config.lr),
        DataLoader(train, batch_size=config.batch_size, shuffle=True),
        DataLoader(val, batch_size=256),
    )
    return reliance.records, monitor
