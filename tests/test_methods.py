"""The methods beyond Grad-CAM and IG, each against a known answer on a tiny model, the registry, the plug-in
explainers, and a training run with every method (and the quality measures and sanity check) that stays
bit-identical to one without the monitor."""

from __future__ import annotations

import random
import re
from typing import Any

import captum.attr
import lightning.pytorch as L
import numpy as np
import pytest
import torch
from conftest import TinyCNN, loaders, trainer_kwargs
from torch import Tensor, nn

from lightning_xai import AttributionMonitor, Display, DriftPolicy, SanityCheck
from lightning_xai.explain import (
    LRP,
    REGISTRY,
    Activations,
    CaptumExplainer,
    DeepLift,
    Filters,
    FunctionExplainer,
    GradientShap,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    Lime,
    Occlusion,
    Saliency,
    SmoothGrad,
    build_explainers,
    method_names,
)
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.views import filter_mosaic

NEW_METHODS = [
    "saliency",
    "smoothgrad",
    "input_x_gradient",
    "gradient_shap",
    "deeplift",
    "occlusion",
    "lime",
    "guided_gradcam",
    "lrp",
    "activations",
    "filters",
]


def linear_model(channels: int = 1, size: int = 3, classes: int = 3, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, classes, bias=bias)).eval()


def weights_of(model: nn.Sequential, target: Tensor, shape: tuple[int, ...]) -> Tensor:
    return model[1].weight.detach()[target].view(len(target), *shape)


def run(explainer: Any, model: nn.Module, x: Tensor, targets: Tensor) -> Any:
    """Set up and explain the way the monitor does: under the guard (eval, frozen parameters, RNG isolated)."""
    with training_state_guard(model):
        explainer.setup(model, model, x[:1].clone())
        return explainer.explain(model, x.clone(), targets)


def close(actual: Tensor, expected: Tensor, atol: float = 1e-5) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = (actual.double() - expected.double()).abs().max().item()
    assert diff <= atol, f"max abs difference {diff:.3g} > {atol}"


class ReadsOnePixel(nn.Module):
    """Logits ``(a * x[0, r, c], -a * x[0, r, c])``: only pixel ``(r, c)`` of channel 0 matters."""

    def __init__(self, r: int, c: int, a: float = 2.0) -> None:
        super().__init__()
        self.r, self.c, self.a = r, c, a
        self.anchor = nn.Parameter(torch.zeros(1))  # so the guard finds a device

    def forward(self, x: Tensor) -> Tensor:
        v = self.a * x[:, 0, self.r, self.c] + 0 * self.anchor
        return torch.stack([v, -v], dim=1)


# ------------------------------------------------------------------------------------- gradient methods


def test_saliency_of_a_linear_model_is_abs_weight_max_over_channels() -> None:
    model = linear_model(channels=3)
    x, t = torch.randn(4, 3, 3, 3), torch.tensor([0, 1, 2, 1])
    out = run(Saliency(), model, x, t)
    close(out.raw, weights_of(model, t, (3, 3, 3)).abs().amax(dim=1))
    close(out.display, out.raw)


def test_smoothgrad_of_a_linear_model_is_abs_weight_and_seeded_without_touching_the_rng() -> None:
    model = linear_model()
    x, t = torch.randn(3, 1, 3, 3), torch.tensor([2, 0, 1])
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = SmoothGrad(samples=5, noise=0.3).explain(model, x.clone(), t)  # no guard: the method isolates itself
    assert torch.equal(torch.random.get_rng_state(), before)
    close(a.raw, weights_of(model, t, (3, 3)).abs())
    # a model whose gradient depends on the input: noise matters, the seed makes it repeatable
    net = nn.Sequential(nn.Flatten(), nn.Linear(9, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    first, second = SmoothGrad(samples=4).explain(net, x, t), SmoothGrad(samples=4).explain(net, x, t)
    other = SmoothGrad(samples=4, seed=1).explain(net, x, t)
    assert torch.equal(first.raw, second.raw) and not torch.equal(first.raw, other.raw)


def test_input_x_gradient_of_a_linear_model() -> None:
    model = linear_model(channels=2)
    x, t = torch.randn(3, 2, 3, 3), torch.tensor([1, 0, 2])
    out = run(InputXGradient(), model, x, t)
    close(out.raw, (x * weights_of(model, t, (2, 3, 3))).sum(dim=1))
    close(out.display, out.raw.abs())


def test_gradient_shap_of_a_linear_model_with_one_baseline_is_exact() -> None:
    model = linear_model()
    x, b, t = torch.randn(3, 1, 3, 3), torch.randn(1, 1, 3, 3), torch.tensor([0, 2, 1])
    out = run(GradientShap(baseline=b, samples=6), model, x, t)  # a (B, C, H, W) distribution: used as is
    close(out.raw, ((x - b) * weights_of(model, t, (1, 3, 3))).sum(dim=1))


def test_gradient_shap_default_baselines_are_zeros_and_the_probes_and_draws_are_seeded() -> None:
    model = linear_model()
    x, t = torch.randn(4, 1, 3, 3), torch.tensor([0, 1, 2, 0])
    shap = GradientShap(samples=64)
    assert torch.equal(shap.references(x), torch.cat([torch.zeros(1, 1, 3, 3), x]))
    black = torch.full((1, 1, 1), -1.0)  # one given reference is used alone, as before the rename
    assert torch.equal(GradientShap(baseline=black).references(x), torch.full((1, 1, 3, 3), -1.0))  # alone
    out = run(shap, model, x, t)
    assert torch.equal(out.raw, run(GradientShap(samples=64), model, x, t).raw)
    # the expectation over the 5 baselines: attribution -> w * (x - mean baseline) as samples grow
    mean_baseline = torch.cat([torch.zeros(1, 1, 3, 3), x]).mean(dim=0)
    expected = ((x - mean_baseline) * weights_of(model, t, (1, 3, 3))).sum(dim=1)
    assert (out.raw - expected).abs().max() < 0.6 * expected.abs().max()


def test_deeplift_rescale_rule_on_one_relu_unit() -> None:
    """f(x) = v * relu(w . x + c): DeepLift gives v * w_i * (x_i - b_i) * (relu(z) - relu(z0)) / (z - z0)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 1), nn.ReLU(), nn.Linear(1, 2)).eval()
    x, b = torch.tensor([[[[1.0, 2.0], [0.5, -1.0]]]]), torch.full((1, 1, 2, 2), -0.2)
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[0.5, 0.3, -0.2, 0.4]]))
        net[1].bias.fill_(0.1)
        net[3].weight.copy_(torch.tensor([[2.0], [-1.0]]))
    out = run(DeepLift(baseline=b), net, x, torch.tensor([0]))
    w, c, v = net[1].weight[0].detach(), 0.1, 2.0
    z, z0 = float(w @ x.flatten() + c), float(w @ b.flatten() + c)
    expected = v * w * (x.flatten() - b.flatten()) * (max(z, 0) - max(z0, 0)) / (z - z0)
    close(out.raw.flatten(), expected)
    assert out.diagnostics["completeness_gap"].max() < 1e-5  # summation-to-delta


def test_deeplift_refuses_a_reused_relu_by_name() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.act = nn.Linear(4, 4), nn.Linear(4, 2), nn.ReLU()

        def forward(self, x: Tensor) -> Tensor:
            return self.b(self.act(self.a(self.act(x.flatten(1)))))

    with pytest.raises(ValueError, match=r"'deeplift'.*`act` \(ReLU, 2 calls\)"):
        run(DeepLift(), Shared(), torch.rand(1, 1, 2, 2), torch.tensor([0]))


# ---------------------------------------------------------------------------------- perturbation methods


def test_occlusion_on_a_model_that_reads_one_pixel() -> None:
    model, x = ReadsOnePixel(5, 2), torch.rand(2, 1, 8, 8) + 0.5
    occ = Occlusion(window=2)
    out = run(occ, model, x, torch.tensor([0, 1]))
    assert occ.passes_per_probe == 17  # 4 x 4 windows + the unoccluded pass
    expected = torch.zeros(2, 8, 8)
    expected[0, 4:6, 2:4] = 2.0 * x[0, 0, 5, 2]  # the window holding (5, 2): f(x) - f(occluded)
    expected[1, 4:6, 2:4] = -2.0 * x[1, 0, 5, 2]  # target 1 reads -a x
    close(out.raw, expected)
    close(out.display, expected.abs())


def test_occlusion_window_comes_from_the_image_size() -> None:
    occ = Occlusion()
    with training_state_guard(ReadsOnePixel(0, 0)):
        occ.setup(ReadsOnePixel(0, 0), ReadsOnePixel(0, 0), torch.zeros(1, 3, 32, 32))
    assert occ._geometry(32, 32) == (4, 4) and occ.passes_per_probe == 65
    assert Occlusion()._geometry(64, 64) == (8, 8)
    with pytest.raises(ValueError, match="larger than the probes"):
        Occlusion(window=9)._geometry(8, 8)


def test_lime_on_a_model_that_reads_one_pixel_grid_and_user_superpixels() -> None:
    model, x = ReadsOnePixel(1, 6), torch.rand(2, 1, 8, 8) + 0.5
    out = run(Lime(cells=4, samples=64), model, x, torch.tensor([0, 0]))
    expected = torch.zeros(2, 8, 8)
    expected[:, 0:2, 6:8] = 2.0 * x[:, 0, 1, 6].view(2, 1, 1)
    close(out.raw, expected, atol=1e-3)

    def halves(images: Tensor) -> Tensor:  # left half 7, right half 3 (any labels: made consecutive)
        labels = torch.full((len(images), 8, 8), 7)
        labels[:, :, 4:] = 3
        return labels

    out = run(Lime(segments=halves, samples=16), model, x, torch.tensor([0, 0]))
    expected = torch.zeros(2, 8, 8)
    expected[:, :, 4:] = 2.0 * x[:, 0, 1, 6].view(2, 1, 1)
    close(out.raw, expected, atol=1e-3)
    again = run(Lime(segments=halves, samples=16), model, x, torch.tensor([0, 0]))
    assert torch.equal(out.raw, again.raw)


# -------------------------------------------------------------------------------- relevance and views


def test_guided_gradcam_is_guided_backprop_times_gradcam() -> None:
    """conv1x1(w=1) -> ReLU -> linear v on a positive input: guided backprop = relu(v_t), Grad-CAM at the conv
    = relu(mean(v_t) * x); their product, per pixel."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2)).eval()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
    x, t = torch.rand(2, 1, 4, 4) + 0.1, torch.tensor([0, 1])
    ggc = GuidedGradCam(layer="0")
    out = run(ggc, net, x, t)
    v = net[3].weight.detach()[t].view(2, 4, 4)
    expected = v.clamp_min(0) * (v.mean(dim=(1, 2)).view(2, 1, 1) * x[:, 0]).clamp_min(0)
    close(out.raw, expected)
    assert ggc.layer_name == "0" and ggc.config() == {"layer": "0", "reshape": None}


def test_lrp_on_a_linear_layer_is_input_times_weight() -> None:
    model = linear_model(bias=False)
    x, t = torch.rand(3, 1, 3, 3) + 0.1, torch.tensor([0, 1, 2])
    out = run(LRP(), model, x, t)
    close(out.raw, (x * weights_of(model, t, (1, 3, 3))).sum(dim=1), atol=1e-4)
    assert out.diagnostics["conservation_gap"].max() < 1e-4  # no bias: all relevance reaches the input


def test_lrp_conserves_relevance_through_conv_relu_and_keeps_the_model_clean() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2, bias=False)
    ).eval()
    x = torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        t = net(x).argmax(dim=1)
    from captum.attr._utils.lrp_rules import EpsilonRule

    rule = EpsilonRule(epsilon=1e-9)
    net[3].rule = rule  # a user's rule must survive (Captum deletes every rule after a call)
    before = [set(vars(m)) for m in net.modules()]
    out = run(LRP(), net, x, t)
    with torch.no_grad():
        logits = net(x).gather(1, t.view(-1, 1))[:, 0]
    close(out.raw.sum(dim=(1, 2)), logits, atol=1e-4)
    assert net[3].rule is rule and [set(vars(m)) for m in net.modules()] == before


def test_lrp_setup_names_the_unsupported_layer() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU(), nn.Flatten(), nn.Linear(2 * 4, 2))
    with pytest.raises(ValueError, match=r"'lrp'.*no rule for layer\(s\) `1` \(GELU\)"):
        run(LRP(), net, torch.rand(1, 1, 4, 4), torch.tensor([0]))


def test_lrp_setup_refuses_a_reused_layer() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: Tensor) -> Tensor:
            return self.lin(self.lin(x.flatten(1)))

    with pytest.raises(ValueError, match=r"`lin` \(Linear, 2 calls\)"):
        run(LRP(), Twice(), torch.rand(1, 1, 2, 2), torch.tensor([0]))


def test_activations_is_the_mean_of_the_strongest_channels() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 36, 2)).eval()
    x = torch.rand(3, 1, 6, 6)
    out = run(Activations(layer="1", channels=2), net, x, torch.tensor([0, 1, 0]))
    with torch.no_grad():
        fmap = net[1](net[0](x))
    top = fmap.mean(dim=(2, 3)).topk(2, dim=1).indices
    expected = torch.stack([fmap[i, top[i]].mean(dim=0) for i in range(3)])
    close(out.raw, expected)


def test_filters_is_the_first_conv_mosaic_for_every_probe() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 3), nn.Flatten(), nn.Linear(2 * 4, 2))
    out = run(Filters(), net, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    mosaic = filter_mosaic(net[0].weight)
    assert mosaic.shape == (7, 7)
    close(out.raw, mosaic.expand(2, 7, 7))
    assert out.display.shape == (2, 8, 8)


# ---------------------------------------------------------------------------------------- plug-ins


def test_captum_explainer_forward_module_and_layer_classes() -> None:
    model = linear_model(channels=2)
    x, t = torch.randn(3, 2, 3, 3), torch.tensor([2, 1, 0])
    sal = run(CaptumExplainer(captum.attr.Saliency, reduce="abs_max"), model, x, t)
    close(sal.raw, weights_of(model, t, (2, 3, 3)).abs().amax(dim=1))
    dl = CaptumExplainer(captum.attr.DeepLift)  # takes the model, not a forward function
    assert dl.first_argument == "model" and dl.name == "deep_lift"
    close(run(dl, model, x, t).raw, (x * weights_of(model, t, (2, 3, 3))).sum(dim=1))
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    cam = CaptumExplainer(captum.attr.LayerGradCam, relu_attributions=True)
    out = run(cam, net, torch.rand(2, 1, 6, 6), torch.tensor([0, 1]))
    assert out.raw.shape == (2, 4, 4) and out.display.shape == (2, 6, 6)
    assert cam.config()["relu_attributions"] is True and cam.config()["captum"] == "LayerGradCam"
    with pytest.raises(ValueError, match="Captum attribution class"):
        CaptumExplainer(len)  # type: ignore[arg-type]


def test_function_explainer_shapes_and_errors() -> None:
    def double_input(forward: Any, inputs: Tensor, targets: Tensor) -> Tensor:
        return 2 * inputs

    x = torch.rand(2, 3, 4, 4)
    fe = FunctionExplainer(double_input)
    out = fe.explain(linear_model(3, 4), x, torch.tensor([0, 1]))
    assert fe.name == "double_input"
    close(out.raw, 2 * x.sum(dim=1))
    bad = FunctionExplainer(lambda f, i, t: i[0], name="bad")
    with pytest.raises(ValueError, match="bad: the function must return"):
        bad.explain(linear_model(3, 4), x, torch.tensor([0, 1]))


# -------------------------------------------------------------------------------------------- registry


def test_every_method_is_registered_with_docs_cost_and_config() -> None:
    assert set(NEW_METHODS) <= set(method_names())
    explainers = build_explainers(NEW_METHODS)
    for name, explainer in zip(NEW_METHODS, explainers, strict=True):
        assert explainer.name == name
        doc = type(explainer).__doc__ or ""
        assert re.search(r",\s+(19|20)\d\d\b", doc) and "Example::" in doc, name  # paper, example
        assert explainer.passes_per_probe >= 0
        assert all(isinstance(v, (str, int, float, bool, list, type(None))) for v in explainer.config().values())
    assert REGISTRY["ixg"].name == "input_x_gradient" and REGISTRY["smooth_grad"].name == "smoothgrad"
    baseline = torch.full((1, 1, 1), -2.0)
    built = build_explainers(["deeplift", "occlusion", "lime"], black=baseline)
    assert all(e.baseline is baseline for e in built)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", [IntegratedGradients, DeepLift, Occlusion, Lime])
def test_a_name_and_an_instance_get_the_same_black_baseline_from_denormalize(kind: type) -> None:
    name = {IntegratedGradients: "integrated_gradients", DeepLift: "deeplift", Occlusion: "occlusion", Lime: "lime"}
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 2.0)
    given = kind()
    by_name = AttributionMonitor(methods=[name[kind]], denormalize=(mean, std)).explainers[0]
    by_instance = AttributionMonitor(methods=[given], denormalize=(mean, std)).explainers[0]
    black = torch.tensor([-1.0, -1.0, 0.0]).reshape(3, 1, 1)  # -mean / std: what displays as black
    assert type(by_name) is type(by_instance) is kind
    torch.testing.assert_close(by_name.baseline, black, rtol=0, atol=0)  # type: ignore[attr-defined]
    torch.testing.assert_close(by_instance.baseline, black, rtol=0, atol=0)  # type: ignore[attr-defined]
    assert given.baseline is None and by_instance is not given  # the user's instance is copied, not changed
    own = kind(baseline=0.25)  # a baseline the user chose is kept
    assert AttributionMonitor(methods=[own], denormalize=(mean, std)).explainers[0].baseline == 0.25
    assert AttributionMonitor(methods=[name[kind]]).explainers[0].baseline is None  # no denormalize: the default


# ----------------------------------------------------------------------- every method in a training run


def fit(tmp_path: Any, callbacks: list[L.Callback]) -> TinyCNN:
    L.seed_everything(0, verbose=False)
    model = TinyCNN()
    train, val = loaders()
    L.Trainer(**trainer_kwargs(tmp_path, callbacks=callbacks, max_epochs=2)).fit(model, train, val)
    return model


def test_training_is_bit_identical_with_every_method_quality_and_sanity_check(tmp_path: Any) -> None:
    plain = fit(tmp_path / "a", [])
    rng_after = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    methods = ["gradcam", IntegratedGradients(n_steps=4), *NEW_METHODS[:6], Lime(samples=16), *NEW_METHODS[7:]]
    monitor = AttributionMonitor(
        num_probes=4,
        methods=methods,
        drift=DriftPolicy(warmup_epochs=1),
        display=Display(quality=("deletion", "insertion", "sparseness")),
    )
    check = SanityCheck(monitor)
    watched = fit(tmp_path / "b", [monitor, check])
    assert monitor.evaluations == 2
    assert not monitor.history[-1].errors, monitor.history[-1].errors
    scalars = monitor.history[-1].scalars
    for name in ["gradcam", *NEW_METHODS]:
        assert f"xai/{name}/drift/rank/vs_previous/median" in scalars or any(
            k.startswith(f"xai/{name}/drift/") for k in scalars
        ), name
    assert "xai/lrp/quality/deletion_auc" in scalars and "xai/filters/quality/deletion_auc" not in scalars
    assert set(check.results) == {"fit_start", "fit_end"}
    for (name, p), (_, q) in zip(plain.state_dict().items(), watched.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
    assert torch.equal(torch.random.get_rng_state(), rng_after[0])
    assert np.array_equal(np.random.get_state()[1], rng_after[1]) and random.getstate() == rng_after[2]


def test_custom_method_example_runs(tmp_path: Any, capsys: Any) -> None:
    from examples.custom_method import main

    monitor = main(["--epochs", "2", "--logdir", str(tmp_path)])
    assert [e.name for e in monitor.explainers] == ["gradcam", "smoothgrad", "patch_ablation", "gradient_norm"]
    scalars = monitor.history[-1].scalars
    assert {"xai/patch_ablation/quality/deletion_auc", "xai/gradient_norm/quality/sparseness"} <= set(scalars)
    assert not monitor.history[-1].errors
    assert "patch_ablation" in capsys.readouterr().out
