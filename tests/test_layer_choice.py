"""Grad-CAM's automatic layer: a (B, C, h, w) map with the input's layout, and a layer every path from the input to
the logits passes through (the cut test), walked from last to first.

The models are the cases of the new-user trial: a hand-written ViT whose attention weights are 4-D, torchvision's
channels-last swin_t, RegNet and ShuffleNet (two-path blocks), and a classifier with an auxiliary decoder. Every
check of "the chosen layer is a cut" here detaches the layer with its own hook, independently of the library.
"""

from __future__ import annotations

import functools
import random
import re
import warnings

import numpy as np
import pytest
import torch
from conftest import gradient_left
from torch import Tensor, nn

from lightning_xai.explain import GradCam
from lightning_xai.explain.forward import model_forward
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.layers import trace_modules

#: the cut test's bound (lightning_xai.explain.layer_choice.CUT_SHARE), written out so that this file also runs against
#: the code before it (where every test of a behaviour fails on its assertion, not on an import)
CUT_SHARE = 0.01
FALLBACK_SHARE = 0.5  # lightning_xai.explain.layer_choice.FALLBACK_SHARE


def setup_cam(net: nn.Module, x: Tensor, cam: GradCam | None = None) -> GradCam:
    """GradCam set up the way the monitor's dry run does it: inside the guard, through ``model_forward``."""
    cam = cam or GradCam()
    with training_state_guard(net), model_forward(net) as forward:
        cam.setup(net, forward, x[:1].clone())
    return cam


# ----------------------------------------------------------------------------------------------- the shape check


def test_consistent_map_accepts_strided_maps_and_refuses_channels_last_and_attention() -> None:
    from lightning_xai.explain.layers import consistent_map

    assert consistent_map((1, 512, 7, 7), (224, 224))
    assert consistent_map((1, 8, 2, 2), (64, 40))  # 32x and 20x: one cell of rounding explains it
    assert consistent_map((1, 8, 4, 6), (28, 36))  # unpadded 5x5 convs on a non-square input
    assert consistent_map((1, 8, 13, 7), (100, 50))
    assert not consistent_map((1, 4, 4, 384), (64, 64))  # swin_t's channels-last stage at 64x64: 384 cells wide
    assert not consistent_map((1, 56, 56, 96), (224, 224))  # ...its first stage at 224x224: factors 4 and 2.3
    assert not consistent_map((1, 2, 65, 65), (32, 32))  # attention over 65 tokens on a 32x32 image
    assert not consistent_map((1, 8, 16, 4), (64, 64))
    assert not consistent_map((1, 8, 1, 1), (64, 64))  # no spatial extent
    assert consistent_map((1, 8, 16, 4), None)  # no input size: any feature map


# ------------------------------------------------------------------------------------------------ a tiny ViT


class Attention(nn.Module):
    """Written the ordinary way: an nn.Softmax and an nn.Dropout on the (B, heads, T, T) weights."""

    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.softmax, self.attn_drop = nn.Softmax(dim=-1), nn.Dropout(0.0)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = self.attn_drop(self.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5))
        return self.proj((a @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(dim), Attention(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyViT(nn.Module):
    """No torchvision/timm attribute names (``cls``, ``layers``, ``ln1``); ``linear_embed``: patches by unfold +
    Linear, so that no module returns a (B, C, h, w) map."""

    def __init__(self, patch: int = 4, img: int = 32, dim: int = 32, linear_embed: bool = False) -> None:
        super().__init__()
        self.patch, self.linear_embed = patch, linear_embed
        self.patch_embed = nn.Linear(patch * patch, dim) if linear_embed else nn.Conv2d(1, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 1 + (img // patch) ** 2, dim) * 0.02)
        self.layers = nn.Sequential(Block(dim), Block(dim))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x: Tensor) -> Tensor:
        if self.linear_embed:
            t = self.patch_embed(nn.functional.unfold(x, self.patch, stride=self.patch).transpose(1, 2))
        else:
            t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        return self.head(self.norm(self.layers(t))[:, 0])


def test_tiny_vit_never_gets_its_attention_weights() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    net = TinyViT().eval()  # 65 tokens: the (B, 2, 65, 65) attention is larger than the image
    cam = setup_cam(net, x)
    assert cam.layer_name == "patch_embed" and cam.cells == (8, 8)
    coarse = TinyViT(patch=8).eval()  # 17 tokens: (B, 2, 17, 17) fits a 32x32 image, but the residual bypasses it
    traces = {t.name: t.output_shape for t in trace_modules(coarse, coarse, x[:1])}
    assert traces["layers.1.attn.attn_drop"] == (1, 2, 17, 17)
    cam = setup_cam(coarse, x)
    assert cam.layer_name == "patch_embed" and cam.cells == (4, 4)
    assert gradient_left(coarse, "layers.1.attn.attn_drop", x) > 0.5
    assert gradient_left(coarse, "patch_embed", x) < CUT_SHARE
    # a token layer named explicitly is reshaped to its patch grid (the class token dropped)
    cam = setup_cam(net, x, GradCam("layers.1.ln1"))
    assert cam.token_layout == (1, 8, 8)


def test_tiny_vit_without_a_feature_map_is_refused_clearly() -> None:
    """docs/compatibility.md: token outputs of other transformers ... otherwise a clear ValueError."""
    torch.manual_seed(0)
    net = TinyViT(linear_embed=True).eval()
    with pytest.raises(ValueError, match=r"no module that returns a 4-D") as info:
        setup_cam(net, torch.rand(2, 1, 32, 32))
    message = str(info.value)
    assert "layers.1.attn.attn_drop" in message and "not the probes' layout" in message
    assert "GradCam(layer=...)" in message and "reshape=" in message


# ----------------------------------------------------------------------------------------------- torchvision


def test_swin_t_channels_last_maps_are_not_read_as_channels_first() -> None:
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    net = models.swin_t(num_classes=5).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    traces = {t.name: t.output_shape for t in trace_modules(net, net, x[:1])}
    assert traces["features.5"] == (1, 4, 4, 384)  # channels-last: what the old rule took as a 4x384 map
    cam = setup_cam(net, x)
    assert cam.layer_name == "features.0.0" and cam.cells == (16, 16)  # the patch embedding: (B, 96, 16, 16)
    assert gradient_left(net, cam.layer_name, x) < CUT_SHARE
    with pytest.warns(UserWarning, match=r"features\.5.*not the input's layout.*GradCam\(reshape=\.\.\.\)"):
        setup_cam(net, x, GradCam("features.5"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cam = setup_cam(net, x, GradCam("features.5", reshape=functools.partial(torch.permute, dims=(0, 3, 1, 2))))
    assert cam.cells == (4, 4)


@pytest.mark.parametrize(
    ("name", "layer"), [("regnet_y_400mf", "trunk_output.block3"), ("shufflenet_v2_x0_5", "stage3")]
)
def test_two_path_blocks_get_a_layer_every_path_passes_through(name: str, layer: str) -> None:
    """The old rule took one branch (``block4-0.f.a``, ``stage4.0.branch2.2``): detaching it left most of the
    input gradient, so Grad-CAM missed most of the evidence."""
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    net = getattr(models, name)(num_classes=10).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cam = setup_cam(net, x)
    assert cam.layer_name == layer and cam.cells == (4, 4)
    assert gradient_left(net, layer, x) < CUT_SHARE  # on both probes, not only the one the choice was tested on
    assert cam.layer_choice is not None
    branches = [n for n in cam.layer_choice.shares if n != layer]
    assert branches and all(gradient_left(net, n, x) > 0.1 for n in branches)  # what it walked past


# -------------------------------------------------------------------------------------- an auxiliary decoder


class AuxNet(nn.Module):
    """A classifier whose forward also runs a reconstruction decoder (for a training loss); the logits never use it."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        )
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
        self.decoder = nn.Sequential(nn.ConvTranspose2d(16, 8, 2, stride=2), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
        self.recon: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        f = self.encoder(x)
        self.recon = self.decoder(f)
        return self.classifier(f)


def test_auxiliary_decoder_is_not_chosen_and_naming_it_is_refused_clearly() -> None:
    torch.manual_seed(0)
    net, x = AuxNet().eval(), torch.rand(2, 1, 32, 32)
    cam = setup_cam(net, x)
    assert cam.layer_name == "encoder"
    assert gradient_left(net, "encoder", x) < CUT_SHARE
    assert cam.layer_choice is not None and cam.layer_choice.shares["decoder"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"`GradCam.layer='decoder.2'`: the logits of AuxNet do not depend on"):
        setup_cam(net, x, GradCam("decoder.2"))


class GlobalSkip(nn.Module):
    """Every feature map is bypassed: the logits also read the input's mean directly."""

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8 + 1, 3)
        self.weight = weight

    def forward(self, x: Tensor) -> Tensor:
        f = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return self.head(torch.cat([f, self.weight * x.mean(dim=(1, 2, 3))[:, None]], dim=1))


def test_no_candidate_passes_the_cut_test_is_a_named_error() -> None:
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"every path from the input to the logits passes through") as info:
        setup_cam(GlobalSkip().eval(), torch.rand(2, 1, 16, 16))
    assert "`conv` leaves" in str(info.value) and "GradCam(layer=...)" in str(info.value)
    cam = setup_cam(GlobalSkip().eval(), torch.rand(2, 1, 16, 16), GradCam("conv"))  # named: used as given
    assert cam.layer_name == "conv"


def test_a_small_path_around_every_candidate_takes_the_closest_to_a_cut_with_a_warning() -> None:
    """A little of the gradient around the whole network (a global shortcut to the logits) made every candidate fail
    the 1 % cut test and Grad-CAM refuse the model; the candidate leaving the least is taken when that is under half,
    and the warning says how much flows around it."""
    torch.manual_seed(0)
    net, x = GlobalSkip(weight=0.05).eval(), torch.rand(2, 1, 16, 16)
    with pytest.warns(
        UserWarning, match=r"automatic layer `conv` is the closest to a cut .* of the input gradient"
    ) as caught:
        cam = setup_cam(net, x)
    said = str(caught[0].message)  # no layer= can do better: what can, and how to silence it
    assert "every other candidate misses more" in said and "Integrated Gradients (on the input) sees all" in said
    assert cam.layer_choice is not None and CUT_SHARE <= cam.layer_choice.bypassed < FALLBACK_SHARE
    assert cam.layer_choice.bypassed == pytest.approx(gradient_left(net, "conv", x[:1]), rel=1e-4)


class InlinedResidual(nn.Module):
    """A stem, then a residual stage whose addition is not a module (as in an fx-traced ResNet): no module at the
    stage's 4x4 resolution carries every path, the stem's 8x8 ReLU does."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.act = nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU()
        self.down, self.conv = nn.Conv2d(8, 8, 1, stride=2), nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        s = self.act(self.stem(x))
        return self.head(torch.relu(self.conv(s) + self.down(s)).mean(dim=(2, 3)))


def test_an_early_cut_below_bypassed_deeper_layers_is_said() -> None:
    """Grad-CAM fell back to the stem of an fx-traced backbone without a word (the zoo trial)."""
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"automatic layer is `act` \(8x8 cells\), early in the model") as caught:
        cam = setup_cam(InlinedResidual().eval(), torch.rand(2, 1, 16, 16))
    assert cam.layer_name == "act" and re.search(
        r"\(`(conv|down)`, 4x4: \d+% of the input gradient", str(caught[0].message)
    )
    with warnings.catch_warnings():  # a cut at the deepest resolution (a block that is a module): nothing to say
        warnings.simplefilter("error")
        assert setup_cam(GlobalSkip(weight=0.0).eval(), torch.rand(2, 1, 16, 16)).layer_name == "conv"


# ---------------------------------------------------------------------------------------- training untouched


def test_cut_test_leaves_gradients_modes_buffers_hooks_and_rng_as_found() -> None:
    from lightning_xai.explain.layer_choice import choose_gradcam_layer

    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    net = models.regnet_y_400mf(num_classes=10).train()
    x = torch.rand(2, 3, 64, 64)
    nn.functional.cross_entropy(net(x), torch.tensor([1, 2])).backward()  # accumulated gradients, as mid-step
    grads = [p.grad.clone() if p.grad is not None else None for p in net.parameters()]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    hooks = [len(m._forward_hooks) + len(m._backward_hooks) for m in net.modules()]
    traces = trace_modules(net.eval(), net, x[:1])  # the trace itself runs in eval mode, as the dry run's does
    net.train()
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    choice = choose_gradcam_layer(net, net, x[:1], traces)
    assert choice.name == "trunk_output.block3" and len(choice.shares) > 1 and choice.seconds > 0
    assert torch.equal(torch.get_rng_state(), rng[0]) and np.array_equal(np.random.get_state()[1], rng[1])
    assert random.getstate() == rng[2]
    assert all(m.training for m in net.modules())
    assert all(p.requires_grad for p in net.parameters())
    assert hooks == [len(m._forward_hooks) + len(m._backward_hooks) for m in net.modules()]
    for p, g in zip(net.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_gradient_mass_is_zero_when_the_layer_is_a_cut() -> None:
    from lightning_xai.explain.layer_choice import gradient_mass

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    x = torch.rand(1, 1, 8, 8)
    with torch.enable_grad():
        full, targets = gradient_mass(net, x)
        left, _ = gradient_mass(net, x, targets, net[1])
    assert full > 0 and left == 0.0
