"""Tiny models and data shared by the monitor tests."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

os.environ.setdefault("PYTHONWARNINGS", "ignore")
torch.set_num_threads(1)  # small models: one thread is far faster than two competing ones on 2 cores


def make_images(n: int = 96, num_classes: int = 4, size: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Class ``c`` puts a bright 3x3 blob at a class-specific place on a noisy dark background."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = 0.1 * torch.rand(n, 1, size, size, generator=g)
    for i, c in enumerate(labels.tolist()):
        r, col = divmod(c, 2)
        r0, c0 = 2 + r * (size // 2), 2 + col * (size // 2)
        images[i, 0, r0 : r0 + 3, c0 : c0 + 3] += 0.9
    return images, labels


class TinyCNN(L.LightningModule):
    """conv-bn-relu -> conv-relu -> pool -> dropout -> linear: BatchNorm buffers and Dropout RNG to disturb."""

    def __init__(self, num_classes: int = 4, channels: int = 1, lr: float = 0.05) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(inplace=True),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(8, num_classes)
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.pool(self.features(x)).flatten(1)))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def loaders(n_train: int = 64, n_val: int = 32, batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    x, y = make_images(n_train + n_val)
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=batch_size)
    return train, val


def trainer_kwargs(tmp_path: Any, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        deterministic=True,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def tiny_data() -> tuple[DataLoader, DataLoader]:
    return loaders()


def gradient_left(net: nn.Module, layer: str, x: Tensor) -> float:
    """Share of the input gradient's L1 mass (predicted class) left when ``layer``'s output is detached."""

    def mass(hooked: bool) -> float:
        xi = x.clone().requires_grad_(True)
        module = dict(net.named_modules())[layer]
        handle = module.register_forward_hook(lambda m, a, o: o.detach().clone()) if hooked else None
        try:
            out = net(xi)
        finally:
            if handle is not None:
                handle.remove()
        score = out.gather(1, net(x).argmax(dim=1, keepdim=True)).sum()
        if not score.requires_grad:
            return 0.0
        (grad,) = torch.autograd.grad(score, xi, allow_unused=True)
        return 0.0 if grad is None else float(grad.abs().sum())

    with torch.enable_grad():
        return mass(True) / mass(False)


def record_sheet_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the explanation sheets put on their pages from now on (the page is still drawn), in order."""
    import lightning_xai.visualize.sheet as sheet

    written: list[str] = []
    put_all = sheet.put_all

    def recording(page: Any, texts: Any, once: int = 0) -> None:
        written.extend(text for _, _, text, _ in texts)
        put_all(page, texts, once)

    monkeypatch.setattr(sheet, "put_all", recording)
    return written


def have(module: str) -> bool:
    """Whether ``module`` (an optional logger's package) imports here."""
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001 - any import failure means "not installed here"
        return False
