"""A binary classifier with one logit (``(N, 1)`` outputs, trained with ``BCEWithLogitsLoss``): the prediction is
class 1 where ``sigmoid(logit) > 0.5`` with confidence ``max(p, 1 - p)`` (was: a softmax over one logit, "predicted
0, confidence 1.000" for every probe), ``target='label'`` takes 0/1 labels and explains the logit, other labels are
refused by name, and the transplant test compares the classes the logit predicts (was: the argmax of one column)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, IntegratedGradients
from lightning_xai.explain.behaviour import follow_test, snapshot
from lightning_xai.explain.quality import perturbation_curves
from lightning_xai.report import read_logdir

sys.path.insert(0, str(Path(__file__).parent))
from conftest import record_sheet_texts, trainer_kwargs  # noqa: E402

#: each probe is a constant image: the hand-built model's logit is that constant
LOGITS = (0.056, -2.0, 1.0, -0.3)
LABELS = (1, 0, 0, 1)


class MeanLogit(L.LightningModule):
    """One logit, the image's mean: a 1x1 convolution (weight 1; Grad-CAM's feature map), pooled, then a linear layer
    (weight 1, bias 0). No training step changes it (lr 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 1, 1), nn.Linear(1, 1)
        with torch.no_grad():
            for layer in (self.conv, self.head):
                layer.weight.fill_(1.0)
                layer.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self(x)[:, 0], y.float())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _probes(labels: tuple[int, ...] = LABELS) -> tuple[Tensor, Tensor]:
    images = torch.tensor(LOGITS).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()
    return images, torch.tensor(labels)


def _validate(tmp_path: Path, monitor: AttributionMonitor) -> None:
    images, labels = _probes()
    val = DataLoader(TensorDataset(images, labels), batch_size=4)
    logger = TensorBoardLogger(str(tmp_path / "logs"), name="binary")
    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=logger, callbacks=[monitor]))
    trainer.validate(MeanLogit(), val, verbose=False)


def test_predict_is_the_sigmoid_of_one_logit_and_the_softmax_of_several() -> None:
    from lightning_xai.probes import predict, probabilities

    confidence, predicted = predict(torch.tensor(LOGITS)[:, None])
    p = [1 / (1 + math.exp(-z)) for z in LOGITS]
    assert predicted.tolist() == [1, 0, 1, 0]
    assert confidence.tolist() == pytest.approx([max(q, 1 - q) for q in p])
    assert probabilities(torch.tensor([[1.0]]))[0].tolist() == pytest.approx([1 - p[2], p[2]])
    two = torch.tensor([[0.0, math.log(3.0)]])  # softmax: [0.25, 0.75]
    assert [t.tolist() for t in predict(two)] == [pytest.approx([0.75]), [1]]


def test_the_table_and_the_sheet_captions_say_what_the_logit_predicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = record_sheet_texts(monkeypatch)
    monitor = AttributionMonitor(
        probes=_probes(), target="label", methods=("gradcam", IntegratedGradients(n_steps=4))
    )  # 0/1 labels on a one-logit model: accepted (was refused: "outside the model's 1 classes")
    _validate(tmp_path, monitor)
    (run,) = read_logdir(str(tmp_path / "logs"))
    (rows,) = run.predictions.values()
    shown = [(r["label"], r["target"], r["predicted"], r["confidence"]) for r in rows]
    assert shown == [(1, 1, 1, 0.514), (0, 0, 0, 0.881), (0, 0, 1, 0.731), (1, 1, 0, 0.574)]
    captions = [t.strip() for t in written if t.strip().startswith(("pred ", "conf ", "expl."))]
    evaluation = ["pred 1", "conf 0.51", "pred 0", "conf 0.88", "pred 1", "conf 0.73", "pred 0", "conf 0.57"]
    assert captions == evaluation[:4] + evaluation  # the setup check's sheet (2 probes), then the evaluation's
    (record,) = monitor.history
    assert not record.errors  # both methods explained the one logit


def test_the_methods_explain_the_logit_whichever_class_a_probe_stands_for(tmp_path: Path) -> None:
    from lightning_xai.explain.run import explain_probes

    images, labels = _probes()
    model = MeanLogit().eval()
    method = IntegratedGradients(n_steps=16)
    method.setup(model, model, images[:1])
    done = explain_probes(model, images, labels, [method], "label")
    assert done.targets.tolist() == list(LABELS)  # the classes; the attribution is the logit's for each
    total = done.results["integrated_gradients"].raw.flatten(1).sum(dim=1)  # IG sums to logit(x) - logit(0)
    assert total.tolist() == pytest.approx(list(LOGITS), abs=1e-4)


@pytest.mark.parametrize("labels", [(1, 0, 2, 1), (1, 0, -1, 1)], ids=["two", "negative"])
def test_a_label_other_than_0_or_1_is_refused_by_name(tmp_path: Path, labels: tuple[int, ...]) -> None:
    monitor = AttributionMonitor(probes=_probes(labels), target="label", methods=("gradcam",))
    with pytest.raises(ValueError, match=rf"`probes` labels \[{labels[2]}\] are not 0 or 1, but MeanLogit returns one"):
        _validate(tmp_path, monitor)


def test_a_target_class_beyond_1_is_refused(tmp_path: Path) -> None:
    monitor = AttributionMonitor(probes=_probes(), target=2, methods=("gradcam",))
    with pytest.raises(ValueError, match=r"`target=2` is out of range for a model with 2 classes"):
        _validate(tmp_path, monitor)


def test_quality_curves_use_the_sigmoid_of_the_target_class() -> None:
    images, labels = _probes()
    model = MeanLogit().eval()
    deletion, insertion = perturbation_curves(model, images, labels, torch.ones(4, 8, 8), steps=2)
    p = torch.sigmoid(torch.tensor(LOGITS))
    own = torch.where(labels.bool(), p, 1 - p)
    assert deletion[:, 0].tolist() == pytest.approx(own.tolist()) and deletion[:, -1].tolist() == pytest.approx(
        [0.5] * 4
    )
    assert insertion[:, 0].tolist() == pytest.approx([0.5] * 4)


class BinaryReader(nn.Module):
    """One logit from the top-left 4x4 patch (weight ``w``) and the centre (``1 - w``): class 1 where bright."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x: Tensor) -> Tensor:
        patch, centre = x[:, 0, :4, :4].mean(dim=(1, 2)), x[:, 0, 12:20, 12:20].mean(dim=(1, 2))
        return (8 * (self.w * (patch - 0.5) + (1 - self.w) * (centre - 0.5)))[:, None]


def test_the_transplant_test_reads_the_class_of_one_logit() -> None:
    labels = torch.tensor([0, 1] * 4)
    images = torch.zeros(8, 1, 32, 32)
    for i, label in enumerate(labels.tolist()):
        images[i, :, 12:20, 12:20] = images[i, :, :4, :4] = 0.8 if label else 0.2
    regions = [((0, 0, 4, 4), list(range(8)))]
    found = follow_test(BinaryReader(1.0), snapshot(BinaryReader(0.0)), 2, images, labels, regions, alpha=0.005)
    assert found is not None and found.pairs == 32
    assert (found.followed, found.followed_before, found.gained) == (32, 0, 32) and found.passed  # was 0/32
