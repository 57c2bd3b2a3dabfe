"""The randomisation sanity check (Adebayo et al. 2018): Grad-CAM and IG on a trained small model pass, an
explainer that returns an edge map of the input fails (with a warning naming it), and the trained model and the
training RNG are never touched."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_images
from scipy.stats import spearmanr
from torch import Tensor, nn

from lightning_xai import FunctionExplainer, sanity_check
from lightning_xai.explain.sanity import SanityResult, randomized_copy, rank_correlation, top_layers


def edge_map(forward: Any, inputs: Tensor, targets: Tensor) -> Tensor:
    """A deliberately broken explainer: Sobel edges of the input, whatever the model."""
    k = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3).to(inputs)
    gray = inputs.sum(dim=1, keepdim=True)
    return F.conv2d(gray, k, padding=1).abs() + F.conv2d(gray, k.transpose(2, 3), padding=1).abs()


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    """A small CNN trained to 100 % on the blob images (about 0.3 s on one CPU thread), and 8 probes."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 144, 4),
    )
    x, y = make_images(256, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, 256, (32,), generator=g)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    probes, labels = make_images(8, seed=7)
    with torch.no_grad():
        assert (net(probes).argmax(dim=1) == labels).all()
    return net, probes, labels


def test_gradcam_and_ig_pass_an_edge_map_fails(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    net, probes, labels = trained
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    methods = ["gradcam", "integrated_gradients", FunctionExplainer(edge_map, name="edges")]
    with pytest.warns(UserWarning, match=r"edges FAILS the randomisation sanity check.*rank correlation of 1\.00"):
        results = sanity_check(net, probes, methods, labels=labels)
    by_name = {r.method: r for r in results}
    assert by_name["gradcam"].passed and by_name["gradcam"].correlation < 0.5
    assert by_name["integrated_gradients"].passed and by_name["integrated_gradients"].correlation < 0.5
    assert not by_name["edges"].passed and by_name["edges"].correlation == pytest.approx(1.0)
    assert by_name["gradcam"].layers == ("5",) and len(by_name["gradcam"].per_probe) == 8
    # the trained model and every RNG stream are as they were
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), rng[0])
    assert np.array_equal(np.random.get_state()[1], rng[1]) and random.getstate() == rng[2]


def test_deeper_randomisation_and_more_methods(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    net, probes, labels = trained
    results = sanity_check(
        net, probes, ["saliency", "input_x_gradient", "filters"], labels=labels, layers=2, warn=False
    )
    assert [r.method for r in results] == ["saliency", "input_x_gradient"]  # the layer views are skipped
    assert all(r.passed and r.layers == ("2", "5") for r in results)


def test_a_method_that_fails_is_reported_not_raised(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    net, probes, labels = trained

    def broken(forward: Any, inputs: Tensor, targets: Tensor) -> Tensor:
        raise RuntimeError("no map today")

    (result,) = sanity_check(net, probes, [FunctionExplainer(broken)], labels=labels, warn=False)
    assert isinstance(result, SanityResult) and not result.passed and "no map today" in result.error
    assert "could not run broken" in result.message


def test_randomized_copy_reinitialises_only_the_named_layers() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    assert top_layers(net, torch.zeros(1, 1, 6, 6), 1) == ["3"]
    assert top_layers(net, torch.zeros(1, 1, 6, 6), 5) == ["0", "3"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    clone = randomized_copy(net, ["3"], seed=0)
    assert torch.equal(clone[0].weight, net[0].weight) and not torch.equal(clone[3].weight, net[3].weight)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert torch.equal(randomized_copy(net, ["3"], seed=0)[3].weight, clone[3].weight)  # seeded


def test_rank_correlation_matches_scipy() -> None:
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 4, 4, generator=g), torch.randn(5, 4, 4, generator=g)
    a[1] = a[1].round()  # ties
    b[2] = a[2] * 3 + 1
    expected = torch.tensor([spearmanr(x.flatten(), y.flatten()).statistic for x, y in zip(a, b, strict=True)])
    assert torch.allclose(rank_correlation(a, b), expected.float(), atol=1e-6)
    assert rank_correlation(torch.ones(1, 4), torch.ones(1, 4)).item() == 1.0


def test_sanity_check_arguments() -> None:
    with pytest.raises(ValueError, match="`layers` must be an int >= 1"):
        sanity_check(nn.Linear(1, 1), torch.zeros(1, 1, 1, 1), layers=0)
