"""The torchvision model zoo (random init, small inputs): automatic layer choice, Grad-CAM and IG, state untouched.

Every model is explained the way the monitor does it (``training_state_guard`` + ``model_forward``), from train
mode, and must leave parameters, buffers, mode flags, ``requires_grad`` flags, gradients and hooks as they were.
DenseNet (in-place ReLU after the chosen layer, concatenations) and ViT (token outputs reshaped to a grid) are
also checked against hand-written Grad-CAM; resnet18 and a ViT also run through a real ``Trainer.fit``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from conftest import gradient_left, trainer_kwargs
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, DriftPolicy
from lightning_xai.explain import GradCam, IntegratedGradients
from lightning_xai.explain.forward import model_forward
from lightning_xai.explain.gradcam import tokens_to_grid
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.layers import token_grid, token_prefix_count, transformer_gradcam_layer

models = pytest.importorskip("torchvision.models")

SIZE = 64


def build(name: str, seed: int = 0, **kwargs: Any) -> nn.Module:
    torch.manual_seed(seed)
    if name == "vit_b_16":
        kwargs.setdefault("image_size", SIZE)
    net = getattr(models, name)(num_classes=5, **kwargs)
    if name.startswith("vit"):  # torchvision zero-initialises the ViT head: constant logits, zero gradients
        nn.init.normal_(net.heads.head.weight, std=0.5)
    return net.train()


def snapshot(net: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "modes": [m.training for m in net.modules()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "grads": [p.grad for p in net.parameters()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in net.modules()],
    }


def assert_untouched(net: nn.Module, before: dict[str, Any]) -> None:
    after = snapshot(net)
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(g is None for g in after["grads"])
    assert after["hooks"] == before["hooks"]


def explain(net: nn.Module, x: Tensor, cam: GradCam | None = None, n_steps: int = 4) -> tuple[GradCam, Any, Any]:
    cam = cam or GradCam()
    with training_state_guard(net), model_forward(net) as forward:
        cam.setup(net, forward, x[:1].clone())
        with torch.no_grad():
            targets = forward(x).argmax(dim=1)
        gradcam = cam.explain(forward, x.clone(), targets)
        ig = IntegratedGradients(n_steps=n_steps).explain(forward, x.clone(), targets)
    return cam, gradcam, ig


ZOO = [  # the last map with at least 4x4 cells at 64x64 (the last block's 2x2 map cannot say where)
    ("resnet18", "layer3", (4, 4)),
    ("vgg11_bn", "features.27", (4, 4)),  # the last ReLU before the last max-pool, not "avgpool" (a resampling)
    ("densenet121", "features.transition3.conv", (4, 4)),
    ("mobilenet_v3_small", "features.9.block.0", (4, 4)),
    ("efficientnet_b0", "features.6.0.block.0", (4, 4)),
    ("convnext_tiny", "features.6.0", (4, 4)),
    ("vit_b_16", "encoder.layers.encoder_layer_11.ln_1", (4, 4)),  # not "conv_proj", the patch embedding
    # two-path blocks: not a layer on one branch (`block4-0.f.a`, `stage4.0.branch2.2`), which the other bypasses
    ("regnet_y_400mf", "trunk_output.block3", (4, 4)),
    ("shufflenet_v2_x0_5", "stage3", (4, 4)),
    # channels-last stages (B, h, w, C) are not read as (B, C, h, w); `permute` (the last map) is 2x2 at 64x64
    ("swin_t", "features.0.0", (16, 16)),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "layer", "grid"), ZOO, ids=[z[0] for z in ZOO])
def test_zoo_layer_choice_gradcam_ig_and_state(name: str, layer: str, grid: tuple[int, int]) -> None:
    net = build(name)
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    before = snapshot(net)
    cam, gradcam, ig = explain(net, x)
    assert cam.layer_name == layer
    assert tuple(gradcam.raw.shape) == (2, *grid)
    assert tuple(gradcam.display.shape) == tuple(ig.display.shape) == (2, SIZE, SIZE)
    for result in (gradcam, ig):
        assert result.raw.dtype == result.display.dtype == torch.float32
        assert torch.isfinite(result.raw).all() and torch.isfinite(result.display).all()
        assert (result.display >= 0).all()
    assert ig.raw.abs().sum() > 0
    assert torch.isfinite(ig.diagnostics["completeness_gap"]).all()
    assert_untouched(net, before)
    if name == "vit_b_16":
        assert cam.token_layout == (1, *grid)  # class token dropped, 16 patch tokens on a 4x4 grid
    else:  # every path from the input to the logits passes through the layer (a ViT's ln_1 is a branch by design)
        assert gradient_left(net.eval(), layer, x) < 0.01


def _densenet_reference(net: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """Textbook Grad-CAM on ``features`` (the in-place ReLU after it must not leak into the activations)."""
    with torch.no_grad():
        activations = net.features(x)
    activations = activations.detach().clone().requires_grad_(True)
    out = F.relu(activations.clone(), inplace=True)
    logits = net.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))
    (grads,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), activations)
    return F.relu((grads.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)).detach()


def _vit_reference(net: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """Textbook ViT Grad-CAM, written out from torchvision's VisionTransformer/EncoderBlock forward."""
    blocks = list(net.encoder.layers)
    with torch.no_grad():
        h = net._process_input(x)
        h = torch.cat([net.class_token.expand(x.shape[0], -1, -1), h], dim=1) + net.encoder.pos_embedding
        for block in blocks[:-1]:
            h = block(h)
    last = blocks[-1]
    a = last.ln_1(h).detach().requires_grad_(True)
    y, _ = last.self_attention(a, a, a, need_weights=False)
    y = y + h
    y = y + last.mlp(last.ln_2(y))
    logits = net.heads(net.encoder.ln(y)[:, 0])
    (grads,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), a)
    side = int((a.shape[1] - 1) ** 0.5)
    fmap = a[:, 1:].detach().reshape(x.shape[0], side, side, -1).permute(0, 3, 1, 2)
    gmap = grads[:, 1:].reshape(x.shape[0], side, side, -1).permute(0, 3, 1, 2)
    return F.relu((gmap.mean(dim=(2, 3), keepdim=True) * fmap).sum(dim=1))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "reference"), [("densenet121", _densenet_reference), ("vit_b_16", _vit_reference)])
def test_zoo_gradcam_matches_handwritten(name: str, reference: Callable[[nn.Module, Tensor, Tensor], Tensor]) -> None:
    net = build(name).eval()
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 3, 4])
    cam = GradCam(layer="features" if name == "densenet121" else None)  # the reference explains `features`
    with training_state_guard(net), model_forward(net) as forward:
        cam.setup(net, forward, x[:1].clone())
        got = cam.explain(forward, x.clone(), targets).raw
    expected = reference(net, x, targets)
    assert got.shape == expected.shape
    assert expected.abs().max() > 0  # a non-trivial map, so the comparison means something
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_reshape_path_equals_captum_path_on_a_4d_layer() -> None:
    """The hook + autograd.grad path used for reshaped layers gives Captum's LayerGradCam result on a 4-D map."""
    net = build("resnet18").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    identity = functools.partial(torch.permute, dims=(0, 1, 2, 3))
    _, captum_path, _ = explain(net, x, GradCam("layer3"), n_steps=1)
    cam, hook_path, _ = explain(net, x, GradCam("layer3", reshape=identity), n_steps=1)
    assert cam.token_layout is None
    torch.testing.assert_close(hook_path.raw, captum_path.raw, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(hook_path.display, captum_path.display, rtol=1e-5, atol=1e-7)


def test_token_helpers() -> None:
    assert token_grid(16, 64, 64) == (4, 4)
    assert token_grid(8, 32, 64) == (2, 4)
    assert token_grid(17, 64, 64) is None
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    grid = tokens_to_grid(tokens, prefix=1, height=2, width=2)
    assert grid.shape == (2, 3, 2, 2)
    assert torch.equal(grid[1, 2], tokens[1, 1:, 2].view(2, 2))  # row-major patch order

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(4)

    class TimmLikeViT(nn.Module):  # the attribute layout of timm's VisionTransformer
        def __init__(self) -> None:
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
            self.num_prefix_tokens = 5  # class + 4 register tokens
            self.blocks = nn.Sequential(Block(), Block())

    wrapper = nn.Sequential(TimmLikeViT())
    assert transformer_gradcam_layer(wrapper) == "0.blocks.1.norm1"
    assert token_prefix_count(wrapper, "0.blocks.1.norm1") == 5
    assert transformer_gradcam_layer(build("resnet18")) is None


class TokenNet(nn.Module):
    """A tiny ViT-like net without a known layout: patch embedding, tokens (no class token), mean-pool head."""

    def __init__(self, extra_tokens: int = 0) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.extra = nn.Parameter(torch.randn(1, extra_tokens, 8)) if extra_tokens else None
        self.mixer = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        if self.extra is not None:
            tokens = torch.cat([self.extra.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = torch.tanh(self.mixer(tokens))
        return self.head(tokens.mean(dim=1))


def test_token_layer_reshaped_automatically_or_refused_clearly() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 32)  # a 4x8 patch grid (non-square)
    net = TokenNet().eval()
    cam, result, _ = explain(net, x, GradCam("mixer"), n_steps=1)
    assert cam.token_layout == (0, 4, 8)
    assert tuple(result.raw.shape) == (2, 4, 8)
    # three extra tokens: neither T nor T-1 is a grid with the input's aspect ratio -> clear error
    odd = TokenNet(extra_tokens=3).eval()
    with pytest.raises(ValueError, match=r"GradCam\(reshape=|`GradCam\.reshape"):
        explain(odd, x, GradCam("mixer"), n_steps=1)
    # ...which gradcam_reshape fixes
    drop3 = functools.partial(tokens_to_grid, prefix=3, height=4, width=8)
    cam, result, _ = explain(odd, x, GradCam("mixer", reshape=drop3), n_steps=1)
    assert tuple(result.raw.shape) == (2, 4, 8) and torch.isfinite(result.raw).all()
    with pytest.raises(ValueError, match=r"`(gradcam_|GradCam\.)reshape` maps"):
        explain(odd, x, GradCam("mixer", reshape=torch.flatten), n_steps=1)
    with pytest.raises(ValueError, match="must be a callable"):
        GradCam("mixer", reshape="tokens")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- through Trainer.fit


class ZooModule(L.LightningModule):
    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__()
        self.net = build(name, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def zoo_loaders(size: int, n_train: int = 16, n_val: int = 8) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_train + n_val, 3, size, size, generator=g)
    y = torch.arange(n_train + n_val) % 5
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=8, shuffle=True)
    return train, DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=8)


def zoo_fit(tmp_path: Any, name: str, size: int, callbacks: list[Any], **kwargs: Any) -> ZooModule:
    L.seed_everything(0, verbose=False)
    model = ZooModule(name, **kwargs)
    trainer = L.Trainer(**trainer_kwargs(tmp_path, callbacks=callbacks, max_epochs=2))
    trainer.fit(model, *zoo_loaders(size))
    return model


@pytest.mark.slow
def test_resnet18_fit_is_bit_identical_with_monitor(tmp_path: Any) -> None:
    plain = zoo_fit(tmp_path / "a", "resnet18", 32, [])
    monitor = AttributionMonitor(
        num_probes=2, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(warmup_epochs=0)
    )
    watched = zoo_fit(tmp_path / "b", "resnet18", 32, [monitor])
    assert monitor.evaluations == 2 and not any(h.errors for h in monitor.history)
    # at 32x32 layer4 is 1x1 and layer3 2x2, so the last map with 4x4 cells is layer2's
    assert monitor.explainers[0].layer_name == "net.layer2"  # type: ignore[attr-defined]
    for (key, p), (_, q) in zip(plain.state_dict().items(), watched.state_dict().items(), strict=True):
        assert torch.equal(p, q), key


@pytest.mark.slow
def test_vit_fit_with_monitor(tmp_path: Any) -> None:
    monitor = AttributionMonitor(
        num_probes=2, methods=("gradcam", IntegratedGradients(n_steps=2)), drift=DriftPolicy(warmup_epochs=0)
    )
    zoo_fit(tmp_path, "vit_b_16", 32, [monitor], image_size=32)
    cam = monitor.explainers[0]
    assert isinstance(cam, GradCam)
    assert cam.layer_name == "net.encoder.layers.encoder_layer_11.ln_1" and cam.token_layout == (1, 2, 2)
    # at random init Grad-CAM's 2 x 2 cells of 2 probes may all be <= 0: said as such, not compared, not a failure
    errors = [e for h in monitor.history for e in h.errors if "every probe's map is zero" not in e]
    assert monitor.evaluations == 2 and not errors
    assert "xai/integrated_gradients/drift/rank_vs_previous/median" in monitor.history[-1].scalars
