"""Plug your own attribution method into AttributionMonitor, next to the built-in ones.

Three ways, all in one ``methods=`` list:

* a built-in method by name (``"gradcam"``) or as an instance with its own options (``SmoothGrad(samples=8)``);
* any Captum attribution class: ``CaptumExplainer(captum.attr.FeatureAblation, feature_mask=..., ...)`` — the
  keyword arguments go to Captum's ``attribute()``;
* your own function ``fn(forward, inputs, targets) -> attribution``: ``FunctionExplainer(fn)``.

Each gets drift scalars, overlays, alerts, and here the quality measures (``quality=``) and the randomisation
sanity check at the end of fit (``SanityCheck``). A small CNN learns where a bright blob sits (4 classes,
synthetic 16x16 images, nothing downloaded); about 10 s on 2 CPU cores.

    python examples/custom_method.py --logdir logs/custom_method
    tensorboard --logdir logs/custom_method --samples_per_plugin images=1000
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import captum.attr
import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import (
    AttributionMonitor,
    CaptumExplainer,
    Display,
    DriftPolicy,
    FunctionExplainer,
    SanityCheck,
    SmoothGrad,
)


def blob_images(n: int, size: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Class ``c`` is a bright 4x4 blob in quadrant ``c`` of a noisy dark image."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = 0.2 * torch.rand(n, 1, size, size, generator=g)
    for i, c in enumerate(labels.tolist()):
        r, col = divmod(c, 2)
        r0 = r * size // 2 + int(torch.randint(0, size // 2 - 4, (1,), generator=g))
        c0 = col * size // 2 + int(torch.randint(0, size // 2 - 4, (1,), generator=g))
        images[i, 0, r0 : r0 + 4, c0 : c0 + 4] += 0.8
    return images, labels


class BlobCNN(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 16 * 16, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/acc", (self(x).argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def gradient_norm(forward: Any, inputs: Tensor, targets: Tensor) -> Tensor:
    """Your own method: the L2 norm over channels of the target logit's gradient, one map per probe.

    It runs with gradients on and the model frozen in eval mode: differentiate with respect to ``inputs`` only."""
    x = inputs.detach().requires_grad_(True)
    score = forward(x).gather(1, targets.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad.norm(dim=1)  # (P, H, W)


def patch_mask(size: int = 16, patch: int = 4) -> Tensor:
    """Feature groups for Captum's FeatureAblation: one id per 4x4 patch, shaped like one probe (1, 1, H, W)."""
    rows = torch.arange(size) // patch
    return (rows[:, None] * (size // patch) + rows[None, :]).view(1, 1, size, size)


def main(argv: Sequence[str] | None = None) -> AttributionMonitor:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    parser.add_argument("--logdir", default="logs/custom_method", help="TensorBoard folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    L.seed_everything(args.seed, verbose=False)
    x, y = blob_images(512, seed=args.seed)
    train = DataLoader(TensorDataset(x[:384], y[:384]), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(x[384:], y[384:]), batch_size=64)

    ablation = CaptumExplainer(
        captum.attr.FeatureAblation,  # any class from captum.attr
        name="patch_ablation",
        feature_mask=patch_mask(),  # the keyword arguments go to attribute()
        perturbations_per_eval=16,
        passes_per_probe=16,  # 16 patches: one forward pass each
    )
    monitor = AttributionMonitor(
        num_probes=8,
        methods=["gradcam", SmoothGrad(samples=8), ablation, FunctionExplainer(gradient_norm)],
        drift=DriftPolicy(warmup_epochs=1),
        display=Display(quality=("deletion", "insertion", "sparseness")),
    )
    trainer = L.Trainer(
        max_epochs=args.epochs,
        logger=TensorBoardLogger(args.logdir, name=""),
        callbacks=[monitor, SanityCheck(monitor, at="fit_end")],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(BlobCNN(), train, val)

    last = monitor.history[-1].scalars
    print(f"{'method':16s} {'deletion':>8s} {'insertion':>9s} {'sparse':>7s} {'sanity':>7s}")
    sanity = {r.method: r for r in trainer.callbacks[1].results["fit_end"]}  # type: ignore[attr-defined]
    for e in monitor.explainers:
        q = [
            last.get(f"xai/{e.name}/quality/{k}", float("nan")) for k in ("deletion_auc", "insertion_auc", "sparseness")
        ]
        verdict = "pass" if sanity[e.name].passed else "FAIL"
        print(f"{e.name:16s} {q[0]:8.3f} {q[1]:9.3f} {q[2]:7.3f} {verdict:>7s}")
    print(f"tensorboard --logdir {args.logdir} --samples_per_plugin images=1000")
    return monitor


if __name__ == "__main__":
    main()
