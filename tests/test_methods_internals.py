"""The internal helpers of the attribution methods (moved here from their docstrings): exact values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_xai.explain.layers import trace_modules, transformer_gradcam_layer
from lightning_xai.explain.perturbation import grid_segments
from lightning_xai.explain.quality import perturbation_curves
from lightning_xai.explain.views import filter_mosaic
from lightning_xai.explain.wrapping import ForwardModule, expand_baseline, reduce_channels, seeded_rng


def test_forward_module_calls_the_function_and_holds_the_model() -> None:
    net = nn.Linear(2, 3)
    wrapped = ForwardModule(net, lambda x: net(x) * 2)
    x = torch.ones(1, 2)
    assert torch.equal(wrapped(x), net(x) * 2)
    assert list(wrapped.children()) == [net]


def test_seeded_rng_repeats_its_draws_and_restores_every_stream() -> None:
    torch.manual_seed(1)
    expected = torch.rand(2)
    torch.manual_seed(1)
    with seeded_rng(3):
        a = torch.rand(2)
    with seeded_rng(3):
        b = torch.rand(2)
    assert torch.equal(a, b) and not torch.equal(a, expected)
    assert torch.equal(torch.rand(2), expected)  # the outer stream did not move


def test_reduce_channels_and_expand_baseline() -> None:
    a = torch.tensor([[[[1.0]], [[-3.0]]]])  # P=1, C=2, 1x1
    assert reduce_channels(a, "sum").item() == -2.0
    assert reduce_channels(a, "abs_max").item() == 3.0
    assert reduce_channels(a, "mean").item() == -1.0
    assert reduce_channels(a[:, 1], "abs_max").item() == 3.0  # (P, h, w): |a|
    with pytest.raises(ValueError, match="`reduce` must be one of"):
        reduce_channels(a, "max")
    per_channel = expand_baseline(torch.tensor([1.0, 2.0]).view(2, 1, 1), torch.zeros(3, 2, 4, 4))
    assert per_channel.shape == (3, 2, 4, 4) and per_channel[2, 1].eq(2.0).all()
    assert expand_baseline(None, torch.ones(1, 1, 2, 2)).eq(0).all()
    assert expand_baseline(0.5, torch.ones(1, 1, 2, 2)).eq(0.5).all()
    with pytest.raises(ValueError, match=r"the baseline of shape \(3,\) does not broadcast"):
        expand_baseline(torch.zeros(3), torch.zeros(1, 2, 4, 4))


def test_grid_segments_and_filter_mosaic() -> None:
    expected = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3], [2, 2, 2, 3, 3, 3]])
    assert torch.equal(grid_segments(torch.zeros(1, 3, 4, 6), cells=2)[0], expected)
    mosaic = torch.tensor(
        [[1.0, 1, 0, 1, 1], [1, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]
    )  # 3 filters on a 2x2 grid, zero gaps
    assert torch.equal(filter_mosaic(torch.ones(3, 2, 2, 2)), mosaic)


def test_trace_modules_and_the_torchvision_vit_layer() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    traces = trace_modules(net, net, torch.zeros(1, 1, 5, 5))
    assert [(t.name, t.calls, t.output_shape) for t in traces] == [
        ("0", 1, (1, 2, 3, 3)),
        ("1", 1, (1, 18)),
        ("2", 1, (1, 3)),
    ]
    models = pytest.importorskip("torchvision.models")
    vit = models.VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=8)
    assert transformer_gradcam_layer(vit) == "encoder.layers.encoder_layer_1.ln_1"


def test_perturbation_curves_of_a_model_that_reads_one_pixel() -> None:
    def reads_pixel_0(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([10 * x[:, 0, 0, 0], torch.zeros(len(x))], dim=1)

    x, relevance = torch.ones(1, 1, 2, 2), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    deletion, insertion = perturbation_curves(reads_pixel_0, x, torch.tensor([0]), relevance, steps=4)
    full = torch.softmax(torch.tensor([10.0, 0.0]), dim=0)[0].item()  # pixel 0 kept; 0.5 once it is removed
    assert torch.allclose(deletion, torch.tensor([[full, 0.5, 0.5, 0.5, 0.5]]))
    assert torch.allclose(insertion, torch.tensor([[0.5, full, full, full, full]]))


def test_every_reference_input_is_checked_when_made_and_digested_in_the_state_key() -> None:
    from lightning_xai import AttributionMonitor, DeepLift, GradientShap, Lime, Occlusion

    for cls in (DeepLift, Occlusion, Lime, GradientShap):
        assert tuple(cls(baseline=[-1.0, -1.0, -1.0]).baseline.shape) == (3, 1, 1)  # one value per channel
        for bad in (float("nan"), "black", [1.0, float("inf")]):
            with pytest.raises(ValueError, match=rf"`{cls.__name__}\(baseline=\.\.\.\)` must be"):
                cls(baseline=bad)
    same_sum = (torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 1.0]))  # once one fingerprint (shape + sum)
    keys = {AttributionMonitor(methods=[DeepLift(baseline=b)]).state_key for b in same_sum}
    assert len(keys) == 2
