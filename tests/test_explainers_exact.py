"""The explainers against independent ground truth, layer auto-detection, and the training-state guard.

Grad-CAM is compared with a hand-written Grad-CAM (plain ``torch.autograd``, no Captum), Integrated Gradients
with the closed form of a linear model, and ``training_state_guard`` with a before/after snapshot of
everything training depends on.
"""

from __future__ import annotations

import copy
import random
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyCNN
from torch import Tensor, nn

from lightning_xai.explain import GradCam, IntegratedGradients
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.layers import auto_gradcam_layer, gradcam_candidates, trace_modules

# ------------------------------------------------------------------------------------------------- helpers


def reference_gradcam(
    to_layer: Callable[[Tensor], Tensor],
    from_layer: Callable[[Tensor], Tensor],
    x: Tensor,
    targets: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Textbook Grad-CAM with plain autograd: returns ``(cam (P,h,w), display (P,H,W), signed sum (P,h,w))``.

    ``to_layer`` maps the input to the layer output A ``(P, K, h, w)``, ``from_layer`` maps A to the logits.
    A is a leaf here, and ``from_layer`` gets a clone, so an in-place op right after the layer cannot alter A.
    """
    with torch.no_grad():
        activations = to_layer(x)
    activations = activations.detach().clone().requires_grad_(True)
    logits = from_layer(activations.clone())
    selected = logits.gather(1, targets.view(-1, 1)).sum()  # probes are independent: d(sum)/dA_i = dy_i/dA_i
    (grads,) = torch.autograd.grad(selected, activations)
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # (P, K, 1, 1)
    signed = (alpha * activations).sum(dim=1, keepdim=True).detach()  # (P, 1, h, w)
    cam = F.relu(signed)
    display = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return cam[:, 0], display[:, 0], signed[:, 0]


def seeded(module_fn: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a module under a fixed seed, then give it non-trivial biases (so zero-init cannot hide errors)."""
    torch.manual_seed(seed)
    module = module_fn()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))
    return module.eval()


def run_gradcam(model: nn.Module, layer: str | nn.Module | None, x: Tensor, targets: Tensor) -> tuple[GradCam, object]:
    cam = GradCam(layer=layer)
    with training_state_guard(model):  # the way the monitor runs it: eval, frozen parameters
        cam.setup(model, model, x[:1].clone())
        explanation = cam.explain(model, x.clone(), targets)
    return cam, explanation


def assert_close(actual: Tensor, expected: Tensor, atol: float) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == torch.float32
    diff = (actual.detach().double() - expected.detach().double()).abs().max().item()
    assert diff <= atol, f"max abs difference {diff:.3g} > {atol}"


# ------------------------------------------------------------------------------------------------ Grad-CAM


def _strided_net() -> nn.Sequential:
    # input (P, 2, 10, 14) -> layer "2" output (P, 5, 5, 7): non-square, smaller than the input
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 5, 3, stride=2, padding=1),  # "2": the Grad-CAM layer
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(5 * 5 * 7, 3),
    )


def _inplace_relu_net() -> nn.Sequential:
    # the layer "2" is directly followed by an in-place ReLU that overwrites its output
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 6, 3),  # "2": (P, 6, 8, 12)
        nn.ReLU(inplace=True),
        nn.Conv2d(6, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(4 * 8 * 12, 3),
    )


@pytest.mark.parametrize(
    ("builder", "layer", "split"),
    [(_strided_net, "2", 3), (_inplace_relu_net, "2", 3)],
    ids=["strided-tanh", "inplace-relu-after-layer"],
)
@pytest.mark.parametrize("targets", [[0, 0, 0, 0, 0], [2, 0, 1, 2, 1]], ids=["same-target", "per-probe-targets"])
def test_gradcam_matches_handwritten(
    builder: Callable[[], nn.Sequential], layer: str, split: int, targets: list[int]
) -> None:
    net = seeded(builder, seed=3)
    reference_net = copy.deepcopy(net)  # untouched by Captum's hooks
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, 10, 14, generator=g)
    t = torch.tensor(targets)

    cam, explanation = run_gradcam(net, layer, x, t)
    expected_raw, expected_display, signed = reference_gradcam(reference_net[:split], reference_net[split:], x, t)

    assert cam.layer_name == layer
    # the ReLU of Grad-CAM must matter for this test to mean something
    assert (signed < 0).any() and (signed > 0).any()
    assert_close(explanation.raw, expected_raw, atol=1e-5)
    assert_close(explanation.display, expected_display, atol=1e-5)
    assert explanation.display.shape == (5, 10, 14)
    assert (explanation.display >= 0).all()


def test_gradcam_inplace_relu_uses_pre_activation_output() -> None:
    """Grad-CAM of a conv followed by ReLU(inplace=True) is computed on the conv's own (signed) output."""
    net = seeded(_inplace_relu_net, seed=5)
    reference_net = copy.deepcopy(net)
    x = torch.randn(4, 2, 10, 14, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([1, 0, 2, 1])
    _, explanation = run_gradcam(net, "2", x, t)
    expected, _, _ = reference_gradcam(reference_net[:3], reference_net[3:], x, t)
    # the post-ReLU variant (what a hook would see if the in-place op leaked into A) differs measurably
    post, _, _ = reference_gradcam(reference_net[:4], reference_net[4:], x, t)
    assert (expected - post).abs().max() > 1e-3
    assert_close(explanation.raw, expected, atol=1e-5)


def test_gradcam_auto_layer_on_tinycnn_matches_handwritten() -> None:
    torch.manual_seed(0)
    model = TinyCNN(num_classes=4)
    with torch.no_grad():  # non-trivial BatchNorm statistics (eval mode uses them)
        model.features[1].running_mean.uniform_(-0.2, 0.2)
        model.features[1].running_var.uniform_(0.5, 1.5)
    model.eval()
    reference = copy.deepcopy(model)
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0, 1, 2, 3, 3, 1])

    cam, explanation = run_gradcam(model, None, x, t)
    expected_raw, expected_display, _ = reference_gradcam(
        reference.features, lambda a: reference.head(reference.pool(a).flatten(1)), x, t
    )
    assert cam.layer_name == "features"
    assert_close(explanation.raw, expected_raw, atol=1e-5)
    assert_close(explanation.display, expected_display, atol=1e-5)


def test_gradcam_layer_given_as_module() -> None:
    net = seeded(_strided_net, seed=7)
    reference_net = copy.deepcopy(net)
    x = torch.randn(3, 2, 10, 14, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([2, 1, 0])
    cam, explanation = run_gradcam(net, net[2], x, t)
    expected_raw, _, _ = reference_gradcam(reference_net[:3], reference_net[3:], x, t)
    assert cam.layer_name == "2"
    assert_close(explanation.raw, expected_raw, atol=1e-5)


# -------------------------------------------------------------------------------------- Integrated Gradients

C, H, W, K = 2, 5, 6, 4


def _linear_model() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(11)
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, K)).eval()
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([0.5, -1.0, 2.0, 0.25]))
    return model, model[1].weight.detach().clone(), model[1].bias.detach().clone()


@pytest.mark.parametrize(
    "baseline",
    [None, 0.3, "tensor-chw", "tensor-1chw"],
    ids=["zero", "float", "tensor-chw", "tensor-1chw"],
)
@pytest.mark.parametrize("internal_batch_size", [None, 3])
def test_integrated_gradients_linear_closed_form(baseline: object, internal_batch_size: int | None) -> None:
    model, weight, _ = _linear_model()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, C, H, W, generator=g)
    targets = torch.tensor([3, 0, 2, 0])
    if baseline == "tensor-chw":
        baseline_value: float | Tensor | None = torch.randn(C, H, W, generator=g)
    elif baseline == "tensor-1chw":
        baseline_value = torch.randn(1, C, H, W, generator=g)
    else:
        baseline_value = baseline  # type: ignore[assignment]
    if baseline_value is None:
        base = torch.zeros_like(x)
    elif isinstance(baseline_value, Tensor):
        base = baseline_value.expand_as(x)
    else:
        base = torch.full_like(x, float(baseline_value))

    ig = IntegratedGradients(n_steps=5, baseline=baseline_value, internal_batch_size=internal_batch_size)
    with training_state_guard(model):
        explanation = ig.explain(model, x.clone(), targets)

    w_target = weight[targets].view(4, C, H, W)
    expected = ((x - base) * w_target).sum(dim=1)  # (P, H, W)
    assert_close(explanation.raw, expected, atol=1e-4)
    assert_close(explanation.display, expected.abs(), atol=1e-4)
    gap = explanation.diagnostics["completeness_gap"]
    assert gap.shape == (4,)
    assert gap.abs().max() < 1e-4
    # completeness, independently: the attribution sums to F(x) - F(baseline) for the target logit
    delta = (model(x) - model(base)).gather(1, targets.view(-1, 1)).squeeze(1)
    assert torch.allclose(explanation.raw.sum(dim=(1, 2)), delta.detach(), atol=1e-4)


def test_integrated_gradients_completeness_gap_is_reported_for_nonlinear_model() -> None:
    """On a smooth non-linear model the gap is small but non-zero and equals |sum(attr) - (F(x) - F(x'))|."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, 8), nn.Tanh(), nn.Linear(8, K)).eval()
    x = torch.randn(3, C, H, W, generator=torch.Generator().manual_seed(9))
    targets = torch.tensor([1, 2, 3])
    ig = IntegratedGradients(n_steps=2)
    with training_state_guard(model):
        explanation = ig.explain(model, x.clone(), targets)
    delta = (model(x) - model(torch.zeros_like(x))).gather(1, targets.view(-1, 1)).squeeze(1).detach()
    expected_gap = (explanation.raw.double().sum(dim=(1, 2)) - delta.double()).abs()
    gap = explanation.diagnostics["completeness_gap"].double()
    assert torch.allclose(gap, expected_gap, atol=1e-4)
    many = IntegratedGradients(n_steps=64).explain(model, x.clone(), targets)
    assert many.diagnostics["completeness_gap"].max() < 1e-3


# ------------------------------------------------------------------------------------ layer auto-detection


def test_trace_and_auto_layer_on_tinycnn() -> None:
    model = TinyCNN().eval()
    traces = trace_modules(model, model, torch.zeros(1, 1, 12, 12))
    by_name = {t.name: t for t in traces}
    assert by_name["features"].output_shape == (1, 8, 12, 12)
    assert by_name["features.3"].output_shape == (1, 8, 12, 12)
    assert by_name["pool"].output_shape == (1, 8, 1, 1)
    assert all(t.calls == 1 for t in traces)
    # modules finish after their children: the container comes after its last child
    assert by_name["features"].order > by_name["features.4"].order
    assert "pool" not in gradcam_candidates(traces)  # 1x1: no spatial extent
    assert auto_gradcam_layer(traces) == "features"
    # every tracing hook is gone
    assert all(not m._forward_hooks for m in model.modules())


class SharedReluNet(nn.Module):
    """The last spatial module is one ReLU applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


def test_auto_layer_skips_reused_module() -> None:
    model = SharedReluNet().eval()
    traces = trace_modules(model, model, torch.zeros(1, 1, 8, 8))
    by_name = {t.name: t for t in traces}
    assert by_name["act"].calls == 2
    assert by_name["act"].order > by_name["conv2"].order  # it IS the last spatial module...
    assert "act" not in gradcam_candidates(traces)  # ...but it is reused
    assert auto_gradcam_layer(traces) == "conv2"
    cam = GradCam()
    with training_state_guard(model):
        cam.setup(model, model, torch.zeros(1, 1, 8, 8))
    assert cam.layer_name == "conv2"


def test_auto_layer_none_for_mlp() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    traces = trace_modules(model, model, torch.zeros(1, 1, 4, 4))
    assert gradcam_candidates(traces) == []
    assert auto_gradcam_layer(traces) is None


def test_auto_layer_resnet18_has_at_least_4x4_cells() -> None:
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    net = models.resnet18(num_classes=10).eval()  # random init, no download
    traces = trace_modules(net, net, torch.zeros(1, 3, 64, 64))
    by_name = {t.name: t for t in traces}
    assert by_name["layer4"].output_shape == (1, 512, 2, 2)
    assert by_name["layer4.1.relu"].calls == 2  # BasicBlock reuses its ReLU
    assert auto_gradcam_layer(traces) == "layer3"  # 4x4: layer4's 2x2 map cannot say where
    big = trace_modules(net, net, torch.zeros(1, 3, 224, 224))
    assert auto_gradcam_layer(big) == "layer4"  # 7x7
    tiny = trace_modules(net, net, torch.zeros(1, 3, 32, 32))
    assert auto_gradcam_layer(tiny) == "layer2"  # 4x4 there


def test_gradcam_chooses_its_layer_quietly_and_warns_on_a_2x2_map() -> None:
    models = pytest.importorskip("torchvision.models")

    net = models.resnet18(num_classes=10).eval()
    x = torch.zeros(1, 3, 64, 64)
    cam = GradCam()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say when all is well (the info line names the layer later)
        cam.setup(net, net, x)
    assert cam.layer_name == "layer3" and cam.cells == (4, 4)
    with pytest.warns(UserWarning, match=r"`layer4` gives a map of only 2x2 cells"):
        GradCam(layer="layer4").setup(net, net, x)


# ------------------------------------------------------------------------------------- training-state guard


class GuardNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.frozen = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(F.relu(self.bn(self.conv(x)))).mean(dim=(2, 3))
        return self.head(self.frozen(h))


def _prepared_net() -> GuardNet:
    torch.manual_seed(0)
    net = GuardNet().train()
    net.drop.eval()  # mixed mode flags
    for p in net.frozen.parameters():
        p.requires_grad_(False)
    net(torch.randn(4, 1, 6, 6)).sum().backward()  # .grad on trainable params; frozen ones stay None
    assert net.conv.weight.grad is not None and net.frozen.weight.grad is None
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
    return net


def _snapshot(net: nn.Module) -> dict[str, object]:
    return {
        "modes": [(n, m.training) for n, m in net.named_modules()],
        "requires": [(n, p.requires_grad) for n, p in net.named_parameters()],
        "grad_ids": [(n, p.grad) for n, p in net.named_parameters()],
        "grad_values": [(n, None if p.grad is None else p.grad.clone()) for n, p in net.named_parameters()],
        "buffers": [(n, b.clone()) for n, b in net.named_buffers()],
        "torch_rng": torch.get_rng_state().clone(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "hooks": [
            (n, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for n, m in net.named_modules()
        ],
    }


def _assert_same(net: nn.Module, before: dict[str, object]) -> None:
    after = _snapshot(net)
    assert after["modes"] == before["modes"]
    assert after["requires"] == before["requires"]
    for (name, g0), (_, g1) in zip(before["grad_ids"], after["grad_ids"], strict=True):  # type: ignore[call-overload]
        assert g1 is g0, f"{name}.grad is another object"
    for (name, v0), (_, v1) in zip(before["grad_values"], after["grad_values"], strict=True):  # type: ignore[call-overload]
        assert (v0 is None) == (v1 is None), name
        if v0 is not None:
            assert torch.equal(v0, v1), f"{name}.grad values changed"
    for (name, b0), (_, b1) in zip(before["buffers"], after["buffers"], strict=True):  # type: ignore[call-overload]
        assert torch.equal(b0, b1), f"buffer {name} changed"
    assert torch.equal(after["torch_rng"], before["torch_rng"])  # type: ignore[arg-type]
    np_before, np_after = before["numpy_rng"], after["numpy_rng"]
    assert np_before[0] == np_after[0] and np.array_equal(np_before[1], np_after[1])  # type: ignore[index]
    assert tuple(np_before[2:]) == tuple(np_after[2:])  # type: ignore[index]
    assert after["python_rng"] == before["python_rng"]
    assert after["hooks"] == before["hooks"]


def _disturb(net: GuardNet) -> None:
    """Everything a careless explainer could do inside the guard."""
    assert all(not m.training for m in net.modules())
    assert all(not p.requires_grad for p in net.parameters())
    assert torch.is_grad_enabled()
    x = torch.randn(4, 1, 6, 6, requires_grad=True)  # consumes torch RNG
    (gx,) = torch.autograd.grad(net(x)[:, 1].sum(), x)
    assert gx.abs().sum() > 0
    assert net.conv.weight.grad is not None  # gradients w.r.t. the input only: param grads untouched
    np.random.rand(3)
    random.random()
    net.train()  # BatchNorm in train mode: forward updates its running stats
    net(torch.randn(4, 1, 6, 6))
    net.zero_grad()  # set_to_none
    net.head.weight.grad = torch.ones_like(net.head.weight)
    net.frozen.bias.grad = torch.ones_like(net.frozen.bias)
    net.head.weight.requires_grad_(True)
    net.conv.register_forward_hook(lambda *a: None)
    net.bn.register_forward_pre_hook(lambda *a: None)
    net.head.register_full_backward_hook(lambda *a: None)


def test_guard_restores_everything() -> None:
    net = _prepared_net()
    kept = net.conv.register_forward_hook(lambda *a: None)  # a hook from before must survive
    before = _snapshot(net)
    with training_state_guard(net):
        _disturb(net)
    _assert_same(net, before)
    assert len(net.conv._forward_hooks) == 1 and kept.id in net.conv._forward_hooks
    kept.remove()


def test_guard_restores_everything_when_block_raises() -> None:
    net = _prepared_net()
    before = _snapshot(net)
    with pytest.raises(RuntimeError, match="explainer failed"):
        with training_state_guard(net):
            _disturb(net)
            raise RuntimeError("explainer failed")
    _assert_same(net, before)


def test_guard_removes_leftover_forward_hook() -> None:
    net = _prepared_net().eval()
    calls = []
    with training_state_guard(net):
        net.conv.register_forward_hook(lambda *a: calls.append(1))
        net(torch.zeros(1, 1, 6, 6))
        assert calls == [1]
    net(torch.zeros(1, 1, 6, 6))
    assert calls == [1], "the hook registered inside the guard still fires"
    assert not net.conv._forward_hooks


def test_guard_rng_stream_continues_as_if_untouched() -> None:
    net = _prepared_net()
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    with training_state_guard(net):
        torch.rand(10)
        np.random.rand(10)
        random.random()
    got = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    want = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]


def test_guard_restores_grad_values_after_in_place_change() -> None:
    net = _prepared_net()
    before = _snapshot(net)
    with training_state_guard(net):
        net.conv.weight.grad.zero_()  # type: ignore[union-attr]
        net.zero_grad(set_to_none=False)
    _assert_same(net, before)


def test_guard_under_inference_mode() -> None:
    net = _prepared_net()
    reference = copy.deepcopy(net).eval()
    x_plain = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(8))
    before = _snapshot(net)
    with torch.inference_mode():
        x = x_plain.clone()  # an inference tensor
        with training_state_guard(net):
            assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
            assert all(not m.training for m in net.modules())
            xi = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(net(xi)[:, 0].sum(), xi)
            net.train()
            net(x.clone())  # running stats change; restored on exit (under inference mode)
        assert torch.is_inference_mode_enabled()
    _assert_same(net, before)
    xr = x_plain.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(reference(xr)[:, 0].sum(), xr)
    assert torch.allclose(grad, expected, atol=1e-6)
    assert grad.abs().sum() > 0
