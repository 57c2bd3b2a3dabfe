"""Model output conventions: what the sheet, the predictions table and the quality curves say for a forward that ends in
``softmax`` (its outputs are the probabilities: used as they are, said once; was: a softmax of the probabilities,
"conf 0.55" for a 94 %-sure prediction), in ``log_softmax`` (a softmax of log-probabilities is the probabilities) or
in ``sigmoid`` on one column (read as a logit, as documented: said once where every output looks like a probability)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, IntegratedGradients
from lightning_xai.explain.quality import perturbation_curves
from lightning_xai.probes import predict, probabilities
from lightning_xai.report import read_logdir

sys.path.insert(0, str(Path(__file__).parent))
from conftest import trainer_kwargs  # noqa: E402

#: each probe is a constant image ``v``; the hand-built model's logits are ``v * WEIGHTS``
VALUES = (1.0, -1.0, 2.0, 0.5)
WEIGHTS = (3.0, 0.5, -1.0)
LABELS = (0, 2, 0, 1)


def _logits() -> Tensor:
    return torch.tensor(VALUES)[:, None] * torch.tensor(WEIGHTS)


class Scaled(L.LightningModule):
    """Logits ``mean(x) * WEIGHTS``: a 1x1 convolution (Grad-CAM's feature map), pooled, a linear layer; ``post``:
    what the forward ends in (``"softmax"``, ``"log_softmax"``, ``"sigmoid"``; one column for ``"sigmoid"``); ``scale``
    multiplies the weights (1e4: a saturated softmax)."""

    def __init__(self, post: str = "", scale: float = 1.0) -> None:
        super().__init__()
        weights = scale * torch.tensor(WEIGHTS[:1] if post == "sigmoid" else WEIGHTS)
        self.post, self.conv, self.head = post, nn.Conv2d(1, 1, 1), nn.Linear(1, len(weights))
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()
            self.head.weight.copy_(weights[:, None])
            self.head.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        z = self.head(self.conv(x).mean(dim=(2, 3)))
        if self.post == "sigmoid":
            return torch.sigmoid(z)
        return getattr(torch, self.post)(z, dim=1) if self.post else z

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self(batch[0]).sum() * 0.0

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _probes(labels: tuple[int, ...] = LABELS) -> tuple[Tensor, Tensor]:
    return torch.tensor(VALUES).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone(), torch.tensor(labels)


def _validate(
    tmp_path: Path, model: nn.Module, labels: tuple[int, ...] = LABELS, **options: Any
) -> tuple[list[Any], list[str]]:
    """The evaluation's predictions table rows and the monitor's warnings."""
    probes = _probes(labels)
    monitor = AttributionMonitor(probes=probes, methods=("gradcam", IntegratedGradients(n_steps=4)), **options)
    logger = TensorBoardLogger(str(tmp_path / "logs"), name="outputs")
    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=logger, callbacks=[monitor]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(model, DataLoader(TensorDataset(*probes), batch_size=4), verbose=False)
    (run,) = read_logdir(str(tmp_path / "logs"))
    (rows,) = run.predictions.values()
    said = [str(w.message) for w in caught if str(w.message).startswith("AttributionMonitor")]
    return rows, said


def test_rows_that_are_probabilities_are_used_as_they_are() -> None:
    p = _logits().softmax(dim=1)
    assert torch.equal(probabilities(p), p)
    confidence, predicted = predict(p)
    assert predicted.tolist() == [0, 2, 0, 0] and confidence.tolist() == pytest.approx(p.max(dim=1).values.tolist())
    logits = torch.tensor([[0.2, 0.8], [0.7, 0.3], [1.5, -0.5]])  # one row is not a probability vector: logits
    assert torch.equal(probabilities(logits), logits.softmax(dim=1))


@pytest.mark.parametrize("post", ["softmax", "log_softmax"])
def test_the_table_shows_the_probabilities_of_a_softmax_or_log_softmax_forward(tmp_path: Path, post: str) -> None:
    rows, said = _validate(tmp_path, Scaled(post))
    p = _logits().softmax(dim=1)
    confidence, predicted = p.max(dim=1)
    expected = [(t, c, round(q, 3)) for t, c, q in zip(LABELS, predicted.tolist(), confidence.tolist(), strict=True)]
    assert [(r["target"], r["predicted"], r["confidence"]) for r in rows] == expected  # softmax was: 0.553 for 0.936
    notes = [m for m in said if "already probabilities" in m]
    if post == "softmax":  # said once (the setup check and the evaluation both see it)
        assert len(notes) == 1 and "Scaled" in notes[0] and "forward_fn=" in notes[0]
    else:
        assert not notes


def test_quality_curves_of_a_softmax_forward_are_its_probabilities() -> None:
    images, labels = _probes()
    relevance = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0))
    curves = [perturbation_curves(Scaled(post).eval(), images, labels, relevance, steps=2) for post in ("", "softmax")]
    for of_logits, of_probabilities in zip(*curves, strict=True):
        assert of_probabilities.flatten().tolist() == pytest.approx(of_logits.flatten().tolist(), abs=1e-6)


def _from_logit(module: nn.Module, x: Tensor) -> Tensor:
    return torch.logit(module(x), eps=1e-6)


def test_one_column_that_looks_like_a_probability_is_read_as_a_logit_and_said_once(tmp_path: Path) -> None:
    labels = (1, 0, 1, 1)
    rows, said = _validate(tmp_path / "sigmoid", Scaled("sigmoid"), labels)
    p = torch.sigmoid(3.0 * torch.tensor(VALUES))  # 0.95, 0.05, 1.00, 0.82: the forward's probabilities
    read = torch.sigmoid(p)  # read as logits, as documented: every probe class 1, at most 0.73 sure
    assert [(r["predicted"], r["confidence"]) for r in rows] == [(1, round(q, 3)) for q in read.tolist()]
    notes = [m for m in said if "every value on the probes is in [0, 1]" in m]
    assert len(notes) == 1 and "Scaled returns one column" in notes[0] and "torch.logit(module(x)" in notes[0]
    rows, said = _validate(tmp_path / "fixed", Scaled("sigmoid"), labels, forward_fn=_from_logit)  # the fix it gives
    expected = [(int(q > 0.5), round(max(q, 1 - q), 3)) for q in p.tolist()]
    assert [(r["predicted"], r["confidence"]) for r in rows] == expected
    assert not [m for m in said if "every value on the probes is in [0, 1]" in m]


class NotFinite(Scaled):
    """Its eval-mode outputs are NaN (as a diverged model's) on the probes below 0.75 (#1 and #3)."""

    def forward(self, x: Tensor) -> Tensor:
        z = super().forward(x)
        low = x.mean(dim=(1, 2, 3))[:, None] < 0.75
        return z if self.training else torch.where(low, torch.tensor(float("nan")), z)


def test_outputs_that_are_not_finite_skip_the_evaluation_and_say_where(tmp_path: Path) -> None:
    probes = _probes()
    monitor = AttributionMonitor(probes=probes, methods=("gradcam", IntegratedGradients(n_steps=4)))
    logger = TensorBoardLogger(str(tmp_path / "logs"), name="outputs")
    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=logger, callbacks=[monitor]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(NotFinite(), DataLoader(TensorDataset(*probes), batch_size=4), verbose=False)
    said = [str(w.message) for w in caught if str(w.message).startswith("AttributionMonitor")]
    (record,) = monitor.history
    reason = "NotFinite's outputs are NaN or Inf on 2 of 4 probes (#1, #3)"
    assert any("prediction pass failed at epoch 0" in e and reason in e for e in record.errors), record.errors
    assert len([m for m in said if reason in m]) == 1  # was: 'pred 0, conf nan' rows and 'the attribution contains NaN'
    assert not [m for m in said if "the attribution contains NaN" in m]
    (run,) = read_logdir(str(tmp_path / "logs"))
    assert not [r for rows in run.predictions.values() for r in rows if r["confidence"] != r["confidence"]]


def test_empty_maps_of_a_saturated_softmax_say_so(tmp_path: Path) -> None:
    rows, said = _validate(tmp_path, Scaled("softmax", scale=1e4))
    assert [r["confidence"] for r in rows] == [1.0] * 4
    empty = [m for m in said if "every probe's map is zero" in m]
    assert len(empty) == 2  # both methods: the gradient of a saturated probability is zero
    assert all("saturated" in m and "forward_fn=" in m for m in empty)  # was: only Grad-CAM's ReLU, for IG too


def test_outputs_that_are_not_finite_are_named_by_their_position_among_all_probes() -> None:
    """Under DDP each rank explains its share (``monitor._explain``: ``first=part.start``); the message named the
    probes by their position in the share (#1 for probe #5 on the rank that explains probes 4 to 7)."""
    from lightning_xai.explain.run import explain_probes

    images, labels = _probes()
    done = explain_probes(NotFinite().eval(), images, labels, [], first=4)  # probes 4-7: #5 and #7 are NaN
    assert any("NaN or Inf on 2 of 4 probes (#5, #7)" in e for e in done.errors), done.errors


def test_perturbation_curves_read_a_models_outputs_one_way_for_every_chunk() -> None:
    """The quality curves ran the model in chunks and decided per chunk whether its outputs were probabilities: a
    logit model whose outputs looked like probabilities on some chunks (the review) got a softmax on the others."""
    from lightning_xai.explain.quality import perturbation_curves

    def forward(x: torch.Tensor) -> torch.Tensor:  # logits: [m, 1 - m] (a probability vector) or [2m, -m]
        m = x.flatten(1).mean(dim=1)
        return torch.where((m > 0.5)[:, None], torch.stack([2 * m, -m], 1), torch.stack([m, 1 - m], 1))

    inputs = torch.stack([torch.full((1, 4, 4), 0.25), torch.full((1, 4, 4), 0.9)])
    relevance = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    deletion, _ = perturbation_curves(forward, inputs, torch.tensor([0, 0]), relevance, steps=4, batch_size=2)
    expected = torch.softmax(forward(torch.zeros(2, 1, 4, 4)), dim=1)[0, 0]  # all removed: [0, 1] as logits
    assert deletion[0, -1].item() == pytest.approx(expected.item()) and expected.item() == pytest.approx(
        0.2689, abs=1e-4
    )
