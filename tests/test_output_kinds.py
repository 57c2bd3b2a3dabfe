"""Models whose outputs are not plain ``(N, num_classes)`` logits, in a real ``Trainer.fit`` with the monitor at its
defaults: each is refused before the first training step with a ``forward_fn=`` (or ``probes=``) that works, and with
it the fit is explained and bit-identical. A segmentation model's ``(N, C, H, W)`` maps, bare or in torchvision's
``{'out': maps}``: the ``forward_fn`` that pools them (was: "select them", or ``module(x)['out']``); a detection model's
one dict per image: each class's highest score (was: ``module(x)[0]``, the first image's dict); a ``forward_fn`` that
returns no logits: named as what to change (was: the model's forward, "pass `forward_fn=`"); ``forward(x1, x2)`` of two
images: both given as the probes' channels (was: ``model(x, ...)``, which cannot get each probe's ``x2``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor

sys.path.insert(0, str(Path(__file__).parent))
from conftest import trainer_kwargs  # noqa: E402

FAST = dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1)


class Tiny(L.LightningModule):
    """Two 3x3 convolutions; ``head`` maps their (N, 6, H, W) features to what the model returns; ``loss(out, y)``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()
        )
        self.train_steps = 0

    def head(self, f: Tensor) -> Any:
        raise NotImplementedError

    def loss(self, out: Any, y: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Any:
        return self.head(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.train_steps += 1
        return self.loss(self(batch[0]), batch[-1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.loss(self(batch[0]), batch[-1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class Segmenter(Tiny):
    """(N, 3, H, W) class maps, per-pixel cross-entropy; ``key``: returned as ``{key: maps}`` (torchvision's)."""

    def __init__(self, key: str | None = None) -> None:
        super().__init__()
        self.classifier, self.key = nn.Conv2d(6, 3, 1), key

    def head(self, f: Tensor) -> Any:
        maps = self.classifier(f)
        return maps if self.key is None else {self.key: maps}

    def loss(self, out: Any, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(out if self.key is None else out[self.key], y)


def segmentation_data() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 3, 8, 8, generator=g)
    masks = (x[:, 0] * 3).long().clamp(max=2)  # (N, H, W) class per pixel
    return (
        DataLoader(TensorDataset(x[:16], masks[:16]), batch_size=8, shuffle=True),
        DataLoader(TensorDataset(x[16:], masks[16:]), batch_size=8),
    )


def fit(
    tmp_path: Path, model: L.LightningModule, data: Any, monitor: AttributionMonitor | None, logger: Any = False
) -> L.LightningModule:
    L.seed_everything(0, verbose=False)
    callbacks = [] if monitor is None else [monitor]
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=callbacks, logger=logger, **FAST))
    trainer.fit(model, *data())
    return model


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Bit-identical parameters and buffers."""
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def pool_out(module: nn.Module, x: Tensor) -> Tensor:
    return module(x)["out"].mean(dim=(2, 3))


@pytest.mark.parametrize("key", [None, "out"], ids=["tensor", "dict"])
def test_a_segmentation_model_is_refused_with_the_forward_fn_that_pools_its_maps(tmp_path: Path, key: Any) -> None:
    model = Segmenter(key)
    pick = "" if key is None else r"\['out'\]"
    with pytest.raises(
        ValueError, match=rf"segmentation.*forward_fn=lambda module, x: module\(x\){pick}\.mean\(dim=\(2, 3\)\)"
    ):
        fit(tmp_path, model, segmentation_data, AttributionMonitor())
    assert model.train_steps == 0
    if key is None:
        return
    monitor = AttributionMonitor(forward_fn=pool_out)  # the fix the message gives
    explained = fit(tmp_path / "fixed", Segmenter(key), segmentation_data, monitor)
    assert monitor.evaluations == 1 and not monitor.history[-1].errors
    alone = fit(tmp_path / "alone", Segmenter(key), segmentation_data, None)
    assert same_weights(explained, alone)


class Detector(Tiny):
    """In training, a dict of losses (``forward(x, labels)``); in eval, one dict of ``boxes``, ``labels`` and
    ``scores`` per image (its 3 best cells), as torchvision's detection models return them."""

    def __init__(self) -> None:
        super().__init__()
        self.classes, self.boxes = nn.Conv2d(6, 3, 1), nn.Conv2d(6, 4, 1)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Any:
        f = self.features(x)
        scores, boxes = self.classes(f).flatten(2), self.boxes(f).flatten(2)
        if self.training:
            assert labels is not None
            return {"classes": nn.functional.cross_entropy(scores.mean(dim=2), labels), "boxes": boxes.pow(2).mean()}
        found = []
        for s, b in zip(scores.softmax(dim=1), boxes, strict=True):
            best = s.amax(dim=0).topk(3).indices
            found.append({"boxes": b[:, best].T, "labels": s[:, best].argmax(dim=0), "scores": s.amax(dim=0)[best]})
        return found

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.train_steps += 1
        return sum(self(*batch).values())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self(batch[0])


def classified_data() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 3, 8, 8, generator=g), torch.arange(24) % 3
    return (
        DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8, shuffle=True),
        DataLoader(TensorDataset(x[16:], y[16:]), batch_size=8),
    )


def best_detection_per_class(module: nn.Module, x: Tensor) -> Tensor:
    """The refusal's ``forward_fn``, with ``num_classes=3``."""
    found = module(x)
    return torch.stack([d["scores"].new_zeros(3).scatter_reduce(0, d["labels"], d["scores"], "amax") for d in found])


def test_a_detection_models_per_image_dicts_are_refused_with_a_forward_fn_that_scores_each_class(
    tmp_path: Path,
) -> None:
    """Was: `forward_fn=lambda module, x: module(x)[0]`, the first image's dict (then `module(x)[0]['boxes']`)."""
    model = Detector()
    with pytest.raises(
        ValueError, match=r"one per probe.*detection.*scatter_reduce\(0, d\['labels'\], d\['scores'\]"
    ) as e:
        fit(tmp_path, model, classified_data, AttributionMonitor())
    assert "module(x)[0]" not in str(e.value) and model.train_steps == 0
    monitor = AttributionMonitor(forward_fn=best_detection_per_class)
    explained = fit(tmp_path / "fixed", Detector(), classified_data, monitor)
    assert monitor.evaluations == 1 and not monitor.history[-1].errors
    assert same_weights(explained, fit(tmp_path / "alone", Detector(), classified_data, None))


def maps_only(module: nn.Module, x: Tensor) -> Tensor:
    return module(x)["out"]


def first_image(module: nn.Module, x: Tensor) -> Any:
    return module(x)[0]


@pytest.mark.parametrize(
    ("model", "forward_fn", "said"),
    [
        (
            lambda: Segmenter("out"),
            maps_only,
            r"`forward_fn` returns shape \(8, 3, 8, 8\) .*`out\.mean\(dim=\(2, 3\)\)`",
        ),
        (
            Detector,
            first_image,
            r"`forward_fn` returns a dict with keys \{'boxes'.*make it return the \(N, num_classes\)",
        ),
    ],
    ids=["per-pixel", "dict"],
)
def test_a_forward_fn_that_returns_no_logits_is_named_as_the_one_to_change(
    tmp_path: Path, model: Any, forward_fn: Any, said: str
) -> None:
    """Was: "Segmenter's forward returns ...: pass `forward_fn=`", to someone who had passed it."""
    with pytest.raises(ValueError, match=said) as e:
        fit(
            tmp_path,
            model(),
            segmentation_data if forward_fn is maps_only else classified_data,
            AttributionMonitor(forward_fn=forward_fn),
        )
    assert "'s forward returns" not in str(e.value) and "pass `forward_fn=" not in str(e.value)


class TwoImages(Tiny):
    """``forward(x1, x2)``: a branch per image, batches ``(x1, x2, y)``."""

    def __init__(self) -> None:
        super().__init__()
        self.other, self.out = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()), nn.Linear(12, 3)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:  # type: ignore[override]
        return self.out(torch.cat([self.features(x1).mean(dim=(2, 3)), self.other(x2).mean(dim=(2, 3))], dim=1))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.train_steps += 1
        x1, x2, y = batch
        return nn.functional.cross_entropy(self(x1, x2), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x1, x2, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x1, x2), y))


def pairs() -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(24, 3, 8, 8, generator=g), torch.rand(24, 3, 8, 8, generator=g), torch.arange(24) % 3


def pair_data() -> tuple[DataLoader, DataLoader]:
    x1, x2, y = pairs()
    return (
        DataLoader(TensorDataset(x1[:16], x2[:16], y[:16]), batch_size=8, shuffle=True),
        DataLoader(TensorDataset(x1[16:], x2[16:], y[16:]), batch_size=8),
    )


def split_pair(model: nn.Module, x: Tensor) -> Tensor:
    return model(x[:, :3], x[:, 3:])


def first_of_pair(x: Tensor) -> Tensor:
    return x[:, :3]


def test_a_forward_of_two_images_is_told_how_to_give_the_probes_both(tmp_path: Path) -> None:
    """Was only `forward_fn=lambda model, x: model(x, ...)`, which cannot get each probe's second image (the probes
    hold the first alone): the refusal now gives the probes both, as channels, and a forward_fn that splits them."""
    model = TwoImages()
    with pytest.raises(
        ValueError, match=r"`probes=\(torch\.cat\(\[x1, x2\], dim=1\), labels\)` and `forward_fn=lambda"
    ):
        fit(tmp_path, model, pair_data, AttributionMonitor())
    assert model.train_steps == 0
    x1, x2, y = pairs()
    probes = (torch.cat([x1[16:], x2[16:]], dim=1), y[16:])  # the fix the message gives, with C = 3
    monitor = AttributionMonitor(probes=probes, forward_fn=split_pair, denormalize=first_of_pair)
    logger = TensorBoardLogger(str(tmp_path / "logs"))  # the sheet shows x1 (`denormalize`): 6 channels are refused
    explained = fit(tmp_path / "fixed", TwoImages(), pair_data, monitor, logger)
    assert monitor.evaluations == 1 and not monitor.history[-1].errors
    assert same_weights(explained, fit(tmp_path / "alone", TwoImages(), pair_data, None))


def test_an_output_type_starting_with_a_vowel_is_named_with_an() -> None:
    from collections import OrderedDict

    from lightning_xai.explain.forward import describe_output

    class Out:
        pass

    assert describe_output(OrderedDict(x=torch.zeros(2, 5, 4, 4)), 2)[0].startswith("an OrderedDict with keys")
    assert describe_output(Out(), 2)[0] == "an Out" and describe_output([torch.zeros(2, 3)], 2)[0].startswith("a list")


class Regressor(Tiny):
    """Four continuous outputs per image, mean squared error against (N, 4) float targets."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(6, 4)

    def head(self, f: Tensor) -> Any:
        return self.out(f.mean(dim=(2, 3)))

    def loss(self, out: Any, y: Tensor) -> Tensor:
        return nn.functional.mse_loss(out, y)


def regression_data() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 3, 8, 8, generator=g), torch.rand(24, 4, generator=g)
    train, val = TensorDataset(x[:16], y[:16]), TensorDataset(x[16:], y[16:])
    return DataLoader(train, batch_size=8), DataLoader(val, batch_size=8)


def test_a_regression_models_targets_point_to_the_output_to_explain(tmp_path: Path) -> None:
    # continuous targets are not classes: the probes are unlabeled and the largest output is explained, which may
    # change from epoch to epoch and read as drift; the note says which argument fixes it (was: "or `target=`")
    with pytest.warns(UserWarning) as said:
        fit(tmp_path, Regressor(), regression_data, AttributionMonitor(num_probes=4))
    notes = [str(w.message) for w in said if "so the probes are unlabeled" in str(w.message)]
    assert len(notes) == 1 and "regression" in notes[0] and "`target=0`" in notes[0]
    explained = fit(tmp_path, Regressor(), regression_data, AttributionMonitor(num_probes=4, target=0))
    assert same_weights(explained, fit(tmp_path, Regressor(), regression_data, None))
