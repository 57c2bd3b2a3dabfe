"""Train with ``LightningCLI``, the monitor configured from YAML like any other callback.

    python -m examples.cli fit --config examples/monitor.yaml          # from the repository root
    python -m examples.cli fit --config examples/monitor.yaml --trainer.max_epochs=10
    tensorboard --logdir logs/cli --samples_per_plugin images=1000

``examples/monitor.yaml`` puts :class:`lightning_xai.AttributionMonitor` under ``trainer.callbacks`` with
``class_path``/``init_args`` (a method name and an :class:`lightning_xai.IntegratedGradients` instance with its
options, the settings objects :class:`lightning_xai.DriftPolicy` with a :class:`lightning_xai.DriftRule`,
:class:`lightning_xai.Display` and :class:`lightning_xai.Budget`); the model and data are the quickstart's
(scikit-learn's digits, nothing downloaded). Any LightningModule and DataModule work: name them by ``class_path``
under ``model:`` and ``data:``. Needs ``pip install 'lightning_xai[cli,examples]'``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.cli import LightningCLI
from torch.utils.data import DataLoader

from examples import quickstart
from examples.quickstart import DigitCNN

__all__ = ["DigitCNN", "DigitsDataModule", "main"]


class DigitsDataModule(L.LightningDataModule):
    """scikit-learn's digits, upscaled to 1x32x32 and normalised (mean 0.305, std 0.324), split 75/25."""

    def __init__(self, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.seed = batch_size, seed

    def setup(self, stage: str) -> None:
        self.train, self.val, _ = quickstart.digits_datasets(self.seed)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=256)


def main(args: Any = None) -> LightningCLI:
    """``LightningCLI`` for any LightningModule / DataModule (named by ``class_path`` in the config)."""
    return LightningCLI(args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
