"""Quality measures: sparseness and entropy against brute-force references, deletion/insertion AUC on a
hand-built model with a known answer, and the monitor's ``quality=`` option."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from torch import Tensor, nn

from lightning_xai import AttributionMonitor, Display, DriftPolicy, IntegratedGradients
from lightning_xai.explain import Explanation, Filters, Saliency, check_quality
from lightning_xai.explain.quality import perturbation_curves, quality_diagnostics
from lightning_xai.functional import curve_auc, entropy, sparseness


def brute_gini(row: list[float]) -> float:
    a = [abs(v) for v in row]
    n, total = len(a), sum(a)
    if total == 0:
        return 0.0
    return sum(abs(x - y) for x in a for y in a) / (2 * n * total)


def brute_entropy(row: list[float]) -> float:
    a = [abs(v) for v in row]
    n, total = len(a), sum(a)
    if n == 1:
        return 0.0
    if total == 0:
        return 1.0
    return -sum(v / total * math.log(v / total) for v in a if v > 0) / math.log(n)


@pytest.mark.parametrize("shape", [(6, 5, 7), (3, 1), (4, 2, 3, 3)])
def test_sparseness_and_entropy_match_brute_force(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(*shape, generator=g)
    maps[0] = 0.0  # all zero
    if maps[0].numel() > 1:
        maps[1] = maps[1].flatten()[0]  # constant (ties)
        maps[2].view(-1)[1:] = 0  # one hot (with sign)
    rows = maps.reshape(len(maps), -1).tolist()
    expected_gini = torch.tensor([brute_gini(r) for r in rows])
    expected_entropy = torch.tensor([brute_entropy(r) for r in rows])
    assert torch.allclose(sparseness(maps), expected_gini, atol=1e-6)
    assert torch.allclose(entropy(maps), expected_entropy, atol=1e-6)
    assert sparseness(maps).dtype == torch.float32 and sparseness(maps).shape == (shape[0],)


def test_curve_auc_is_the_trapezoid_rule() -> None:
    scores = torch.rand(5, 11, generator=torch.Generator().manual_seed(1))
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    expected = torch.tensor([trapezoid(r, dx=0.1) for r in scores.double().numpy()], dtype=torch.float32)
    assert torch.allclose(curve_auc(scores), expected, atol=1e-6)
    with pytest.raises(ValueError, match="S >= 1"):
        curve_auc(torch.zeros(2, 1))


class CountsImportantPixels(nn.Module):
    """Logits ``(s * sum of the 10 important pixels, 0)`` on 1x10x10 images: p(class 0) = sigmoid(s * count)."""

    def __init__(self, important: Tensor, scale: float = 0.3) -> None:
        super().__init__()
        self.register_buffer("important", important.float())
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        evidence = self.scale * (x[:, 0] * self.important).flatten(1).sum(dim=1)
        return torch.stack([evidence, torch.zeros_like(evidence)], dim=1)


def test_deletion_and_insertion_auc_on_a_hand_built_model() -> None:
    important = torch.zeros(10, 10)
    important.view(-1)[torch.randperm(100, generator=torch.Generator().manual_seed(0))[:10]] = 1
    model, x, t = CountsImportantPixels(important), torch.ones(2, 1, 10, 10), torch.tensor([0, 0])
    best = important.clone()  # the important pixels first
    worst = 1 - important  # every other pixel first, the important ones last
    relevance = torch.stack([best, worst])
    deletion, insertion = perturbation_curves(model, x, t, relevance, steps=10)
    full, empty = 1 / (1 + math.exp(-0.3 * 10)), 0.5
    # 10 pixels per step: the best order removes (inserts) all important pixels in step 1, the worst in step 10
    assert torch.allclose(deletion[0], torch.tensor([full] + [empty] * 10), atol=1e-6)
    assert torch.allclose(deletion[1], torch.tensor([full] * 10 + [empty]), atol=1e-6)
    assert torch.allclose(insertion[0], torch.tensor([empty] + [full] * 10), atol=1e-6)
    assert torch.allclose(insertion[1], torch.tensor([empty] * 10 + [full]), atol=1e-6)
    best_deletion, worst_deletion = (full + empty) / 20 + 9 * empty / 10, (full + empty) / 20 + 9 * full / 10
    assert torch.allclose(curve_auc(deletion), torch.tensor([best_deletion, worst_deletion]), atol=1e-6)
    assert torch.allclose(curve_auc(insertion), torch.tensor([worst_deletion, best_deletion]), atol=1e-6)
    # a small pass size gives the same curves
    small = perturbation_curves(model, x, t, relevance, steps=10, batch_size=3)
    assert torch.equal(small[0], deletion) and torch.equal(small[1], insertion)


def test_perturbation_curves_baseline_and_ties_are_deterministic() -> None:
    model = CountsImportantPixels(torch.eye(10))
    x, t = torch.ones(1, 1, 10, 10), torch.tensor([0])
    flat = torch.zeros(1, 10, 10)  # all tied: row-major order, the first 10 cells hold one important pixel
    deletion, _ = perturbation_curves(model, x, t, flat, steps=10, baseline=1.0)  # "removing" to 1 changes nothing
    assert torch.allclose(deletion, deletion[:, :1].expand(1, 11))
    deletion, _ = perturbation_curves(model, x, t, flat, steps=10)
    expected = torch.tensor([1 / (1 + math.exp(-0.3 * (10 - k))) for k in range(11)])
    assert torch.allclose(deletion[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="relevance"):
        perturbation_curves(model, x, t, torch.zeros(1, 5, 5))


def test_quality_diagnostics_keys_views_and_failures(recwarn: Any) -> None:
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x, t = torch.rand(2, 1, 4, 4), torch.tensor([0, 2])
    e = Saliency().explain(lin, x, t)
    all_four = ("deletion", "insertion", "sparseness", "entropy")
    out = quality_diagnostics(Saliency(), lin, x, t, e, all_four)
    assert sorted(out) == ["quality/deletion_auc", "quality/entropy", "quality/insertion_auc", "quality/sparseness"]
    assert all(v.shape == (2,) for v in out.values())
    assert quality_diagnostics(Filters(), lin, x, t, e, all_four) == {}  # not an explanation of a class

    def broken(z: Tensor) -> Tensor:
        raise RuntimeError("boom")

    out = quality_diagnostics(Saliency(), broken, x, t, Explanation(e.raw, e.display), all_four)
    assert sorted(out) == ["quality/entropy", "quality/sparseness"]  # the pure ones ran before the failure
    assert any("quality measures of saliency failed" in str(w.message) for w in recwarn)


def test_check_quality() -> None:
    assert check_quality(["entropy", "entropy", "deletion"]) == ("entropy", "deletion")
    with pytest.raises(ValueError, match=r"unknown measure\(s\) \['aopc'\]"):
        check_quality(["aopc"])
    with pytest.raises(ValueError, match="unknown measure"):
        AttributionMonitor(display=Display(quality=("deletion", "aopc")))


def test_monitor_logs_quality_per_method(tmp_path: Any) -> None:
    L.seed_everything(0, verbose=False)
    monitor = AttributionMonitor(
        num_probes=4,
        methods=("gradcam", IntegratedGradients(n_steps=4)),
        drift=DriftPolicy(warmup_epochs=1),
        display=Display(quality=("deletion", "insertion", "sparseness", "entropy")),
    )
    train, val = loaders()
    L.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor], max_epochs=1)).fit(TinyCNN(), train, val)
    scalars = monitor.history[-1].scalars
    for method in ("gradcam", "integrated_gradients"):
        for key in ("deletion_auc", "insertion_auc", "sparseness", "entropy"):
            value = scalars[f"xai/{method}/quality/{key}"]
            assert 0.0 <= value <= 1.0, (method, key, value)
