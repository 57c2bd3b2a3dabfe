"""Model families of the suite and the LightningModule that trains them.

* ``cnn``: the demo's small global-average-pooled CNN (:class:`examples.shortcut.scenario.DigitsCNN`'s layers),
  1x32x32 inputs in ``[0, 1]``; Grad-CAM picks its last conv block at 8x8.
* ``resnet18``: torchvision ``resnet18(num_classes=10)`` from scratch on 3x64x64 ImageNet-normalised inputs
  (the README's recipe: the monitor gets ``denormalize=(mean, std)``); Grad-CAM picks ``layer4`` at 2x2.
* ``vgg``: a VGG-style conv stack (two conv pairs and a conv, three max-pools) with a flatten+linear head and no
  global pooling, 1x32x32 inputs; Grad-CAM picks the last conv block at 4x4.
* ``vit``: torchvision's ``VisionTransformer`` (32x32 images, 4x4 patches, 4 layers, 4 heads, width 64, MLP 128)
  from scratch on 3x32x32 inputs in ``[0, 1]``; Grad-CAM picks the last block's ``ln_1`` (an 8x8 token grid).

``cnn`` and ``vgg`` take 3 input channels (``rgb32``, not normalised) when the scenario's cue is a colour cue, else
1 (``gray32``); resnet18 always takes ``rgb64`` (a colour cue's RGB image upscaled, a gray one expanded) and vit
``rgb32``. :func:`view_for` is the one place that picks the view from (family, cue); the first layer's input
channels follow the view.

Every family is split into ``backbone`` and ``head`` so that the ``unfreeze`` scenario can freeze the backbone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor, nn

from benchmarks.alert_truth.cues import is_colour
from benchmarks.alert_truth.data import VIEWS
from examples.shortcut.scenario import DigitsCNN


class GapCNN(nn.Module):
    """The layers of the demo's ``DigitsCNN`` (32->16->8, global average pooling, linear head); with
    ``in_channels != 1`` its first conv is replaced by one taking that many channels (drawn after the others)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        reference = DigitsCNN(num_classes=num_classes)
        if in_channels != 1:
            old = reference.features[0][0]
            reference.features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, padding=1)
        self.backbone = reference.features
        self.head = reference.head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone((x - 0.3) / 0.4))  # as DigitsCNN.forward


class VGGStyle(nn.Module):
    """conv-conv-pool (32), conv-conv-pool (64), conv-pool (128) -> 128x4x4 -> flatten -> 256 -> 10."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()

        def conv(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.backbone = nn.Sequential(
            *conv(in_channels, 32), *conv(32, 32), nn.MaxPool2d(2),
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


class _Torchvision(nn.Module):
    """A torchvision model in ``net``; ``head`` is its attribute ``head_name``, the backbone everything else."""

    head_name = ""
    net: nn.Module

    @property
    def head(self) -> nn.Module:
        return getattr(self.net, self.head_name)

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.head.parameters()}
        return [p for p in self.net.parameters() if id(p) not in head]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ResNet18(_Torchvision):
    """torchvision's resnet18, random initialisation (no download); ``head`` is its ``fc``."""

    head_name = "fc"

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        from torchvision.models import resnet18

        if in_channels != 3:
            raise ValueError(f"resnet18 takes 3 channels, not {in_channels}")

        self.net = resnet18(weights=None, num_classes=num_classes)


class ViT(_Torchvision):
    """torchvision's ``VisionTransformer`` for 3x32x32 inputs (8x8 patches of 4x4 pixels), random initialisation;
    ``head`` is its ``heads``, the backbone everything else (patch projection, class token, encoder)."""

    head_name = "heads"

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        from torchvision.models import VisionTransformer

        if in_channels != 3:
            raise ValueError(f"vit takes 3 channels, not {in_channels}")
        self.net = VisionTransformer(
            image_size=32, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=num_classes
        )


@dataclass(frozen=True)
class Family:
    """``build(in_channels=...)`` makes the network; ``view``/``colour_view``: the data.View kind for gray and for
    colour cues (:func:`view_for`); ``lr``: the family's own Adam learning rate (None: the suite's 1e-3)."""

    build: Callable[..., nn.Module]
    view: str
    colour_view: str
    lr: float | None = None


FAMILIES: dict[str, Family] = {
    "cnn": Family(GapCNN, "gray32", "rgb32"),
    "resnet18": Family(ResNet18, "rgb64", "rgb64"),
    "vgg": Family(VGGStyle, "gray32", "rgb32"),
    "vit": Family(ViT, "rgb32", "rgb32"),
}


def view_for(model: str, cue: str) -> str:
    """The view (data.View kind) family ``model`` gets for ``cue``: the one place that picks it."""
    family = FAMILIES[model]
    return family.colour_view if is_colour(cue) else family.view


def build(model: str, cue: str, num_classes: int = 10) -> nn.Module:
    """The network of family ``model`` for ``cue``, its first layer taking the view's channels."""
    return FAMILIES[model].build(num_classes=num_classes, in_channels=VIEWS[view_for(model, cue)])


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
