"""Model families of the suite and the LightningModule that trains them.

* ``cnn``: the demo's small global-average-pooled CNN (:class:`examples.shortcut.scenario.DigitsCNN`'s layers),
  1x32x32 inputs in ``[0, 1]``; Grad-CAM picks its last conv block at 8x8.
* ``resnet18``: torchvision ``resnet18(num_classes=10)`` from scratch on 3x64x64 ImageNet-normalised inputs
  (the README's recipe: the monitor gets ``denormalize=(mean, std)``); Grad-CAM picks ``layer4`` at 2x2.
* ``vgg``: a VGG-style conv stack (two conv pairs and a conv, three max-pools) with a flatten+linear head and no
  global pooling, 1x32x32 inputs; Grad-CAM picks the last conv block at 4x4.

Every family is split into ``backbone`` and ``head`` so that the ``unfreeze`` scenario can freeze the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor, nn

from examples.shortcut.scenario import DigitsCNN


class GapCNN(nn.Module):
    """The layers of the demo's ``DigitsCNN`` (32->16->8, global average pooling, linear head)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        reference = DigitsCNN(num_classes=num_classes)
        self.backbone = reference.features
        self.head = reference.head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone((x - 0.3) / 0.4))  # as DigitsCNN.forward


class VGGStyle(nn.Module):
    """conv-conv-pool (32), conv-conv-pool (64), conv-pool (128) -> 128x4x4 -> flatten -> 256 -> 10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def conv(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.backbone = nn.Sequential(
            *conv(1, 32), *conv(32, 32), nn.MaxPool2d(2),
            *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2),
            *conv(64, 128), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone((x - 0.3) / 0.4))


class ResNet18(nn.Module):
    """torchvision's resnet18, random initialisation (no download); ``head`` is its ``fc``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.net = resnet18(weights=None, num_classes=num_classes)

    @property
    def head(self) -> nn.Module:
        return self.net.fc

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.net.fc.parameters()}
        return [p for p in self.net.parameters() if id(p) not in head]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass(frozen=True)
class Family:
    build: type[nn.Module]
    view: str  # data.View kind


FAMILIES: dict[str, Family] = {
    "cnn": Family(GapCNN, "gray32"),
    "resnet18": Family(ResNet18, "rgb64"),
    "vgg": Family(VGGStyle, "gray32"),
}


def backbone_parameters(net: nn.Module) -> list[nn.Parameter]:
    if hasattr(net, "backbone_parameters"):
        return list(net.backbone_parameters())
    return list(net.backbone.parameters())  # type: ignore[union-attr]


@dataclass(frozen=True)
class Optim:
    """The optimiser schedule of a run (set by the scenario)."""

    lr: float = 1e-3
    warm_restart_epochs: int | None = None  # CosineAnnealingWarmRestarts period (stepped per batch)
    steps_per_epoch: int = 1


class Classifier(L.LightningModule):
    """Cross-entropy training of ``net`` with Adam; counts validation accuracy in ``val_counts``."""

    def __init__(self, net: nn.Module, optim: Optim) -> None:
        super().__init__()
        self.net = net
        self.optim = optim
        self.val_counts = [0, 0]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_counts = [0, 0]  # correct, total: read by the suite's recorder

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        correct = logits.argmax(1) == y
        self.val_counts[0] += int(correct.sum())
        self.val_counts[1] += int(y.numel())
        self.log("val/loss", nn.functional.cross_entropy(logits, y))
        self.log("val/acc", correct.float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.optim.lr)
        if self.optim.warm_restart_epochs is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=self.optim.warm_restart_epochs * self.optim.steps_per_epoch
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
