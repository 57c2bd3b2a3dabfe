"""Quickstart: watch what a small CNN looks at while it learns scikit-learn's digits.

A 3-layer CNN is trained for a few epochs on the 1,797 8x8 digits bundled with scikit-learn (no download),
upscaled to 32x32. ``AttributionMonitor`` explains 8 fixed validation images with Grad-CAM and Integrated
Gradients after every validation epoch, logs heatmap overlays to TensorBoard and tracks how far the
explanations drift from epoch to epoch.

    python examples/quickstart.py                  # 15-30 s on 2 CPU cores (make quickstart)
    python examples/quickstart.py --export-docs    # also write the final grids to docs/images/*.png
    tensorboard --logdir logs/quickstart --samples_per_plugin images=1000   # every sheet, not only 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, Display, DriftPolicy, IntegratedGradients


def digits_datasets(seed: int) -> tuple[TensorDataset, TensorDataset, tuple[float, float]]:
    """scikit-learn's digits as normalised 1x32x32 tensors, split 75/25 stratified by class."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, val_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.25, stratify=labels.numpy(), random_state=seed
    )
    # Normalise with the training split's statistics; the monitor gets them back to draw the digits.
    mean, std = images[train_idx].mean().item(), images[train_idx].std().item()
    images = (images - mean) / std
    train = TensorDataset(images[train_idx], labels[train_idx])
    val = TensorDataset(images[val_idx], labels[val_idx])
    return train, val, (mean, std)


class DigitCNN(L.LightningModule):
    """conv-bn-relu x3 with two max-pools (32 -> 16 -> 8), global average pool, linear head."""

    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

        # Grad-CAM picks the last spatial feature map automatically: `features` (64 channels, 8x8).
        self.features = nn.Sequential(block(1, 16), nn.MaxPool2d(2), block(16, 32), nn.MaxPool2d(2), block(32, 64))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (N, 10) logits: what the monitor explains

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class PrintEpoch(L.Callback):
    """One line per epoch: validation accuracy and the monitor's median drift (see docs/index.md)."""

    KEYS = {
        "gradcam rank-drift vs prev": "xai/gradcam/drift/rank_vs_previous/median",
        "vs ref": "xai/gradcam/drift/rank_vs_reference/median",
        "IG vs ref": "xai/integrated_gradients/drift/rank_vs_reference/median",
    }

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics  # the monitor's scalars land here, like any `self.log` value
        parts = [f"epoch {trainer.current_epoch}", f"val_acc {metrics['val_acc'].item():.3f}"]
        monitor = next(c for c in trainer.callbacks if isinstance(c, AttributionMonitor))
        for label, key in self.KEYS.items():  # 0.0 until there is something to compare with: shown as "-"
            versus_reference = "ref" in label and trainer.current_epoch <= monitor.drift_policy.warmup_epochs
            parts.append(
                f"{label} -" if versus_reference or trainer.current_epoch == 0 else f"{label} {metrics[key].item():.3f}"
            )
        print(" | ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    parser.add_argument("--logdir", default="logs/quickstart", help="TensorBoard folder (default logs/quickstart)")
    parser.add_argument("--seed", type=int, default=0, help="seed of split, init and shuffling (default 0)")
    parser.add_argument(
        "--export-docs",
        nargs="?",
        const="docs/images",
        default=None,
        metavar="DIR",
        help="after training, write the last heatmap grids as PNGs into DIR (default docs/images)",
    )
    args = parser.parse_args()

    L.seed_everything(args.seed, workers=True)
    torch.set_num_threads(1)  # a model this small trains fastest on one CPU thread
    train, val, (mean, std) = digits_datasets(args.seed)
    train_loader = DataLoader(train, batch_size=32, shuffle=True)
    val_loader = DataLoader(val, batch_size=256)

    monitor = AttributionMonitor(
        num_probes=8,
        methods=("gradcam", IntegratedGradients()),  # baseline: the black image, from denormalize
        denormalize=(mean, std),
        drift=DriftPolicy(on_drift="warn"),
        display=Display(log_heatmaps=True, log_grids=args.export_docs is not None),
    )
    logger = TensorBoardLogger(args.logdir, name="")  # -> <logdir>/version_<n>/
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",  # the model is tiny; a GPU would not help
        logger=logger,
        callbacks=[monitor, PrintEpoch()],
        deterministic=True,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    trainer.fit(DigitCNN(), train_loader, val_loader)

    # Alerts are kept on the monitor (and in checkpoints); with on_drift="warn" they were also warned about.
    if monitor.alerts:
        for alert in monitor.alerts:
            print(f"ALERT: {alert.message}")
    else:
        print("No drift alerts.")

    if args.export_docs:
        from export_grids import export_grids  # examples/export_grids.py, next to this file

        for path in export_grids(logger.log_dir, args.export_docs, prefix="quickstart"):
            print(f"wrote {path}")

    print(f"tensorboard --logdir {Path(args.logdir).resolve()} --samples_per_plugin images=1000")


if __name__ == "__main__":
    main()
