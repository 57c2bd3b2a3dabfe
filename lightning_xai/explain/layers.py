"""Find the layer Grad-CAM explains: trace one forward pass and look at what every module returned."""

from __future__ import annotations

import difflib
import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LayerTrace:
    """What one module did during a traced forward pass."""

    name: str
    calls: int
    output_shape: tuple[int, ...] | None  # shape of the last call's tensor output; None if not a tensor
    order: int  # position of its last call among all module calls
    module_type: str = ""  # class name of the module, e.g. "Conv2d"


def trace_modules(model: nn.Module, forward: Callable[[Tensor], object], example: Tensor) -> list[LayerTrace]:
    """Each submodule's calls and output shape in one ``forward(example)``, in the order of their last calls."""
    traces: dict[str, LayerTrace] = {}
    counter = itertools.count()

    def record(name: str, module: nn.Module, _inputs: object, output: object) -> None:
        shape = tuple(output.shape) if isinstance(output, Tensor) else None
        calls = traces[name].calls + 1 if name in traces else 1
        traces[name] = LayerTrace(name, calls, shape, next(counter), type(module).__name__)

    handles = [m.register_forward_hook(functools.partial(record, n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            forward(example)
    finally:
        for handle in handles:
            handle.remove()
    return sorted(traces.values(), key=lambda t: t.order)


def is_feature_map(shape: tuple[int, ...] | None) -> bool:
    """A 4-D ``(B, C, H, W)`` output with more than one spatial cell."""
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1


def gradcam_candidates(traces: list[LayerTrace]) -> list[str]:
    """Names of modules that return a spatial feature map and run once per forward, in execution order."""
    return [t.name for t in traces if is_feature_map(t.output_shape) and t.calls == 1]


#: modules that only resample a feature map (an adaptive pool to 7x7 after a 2x2 map adds no information)
RESAMPLING_TYPES = ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d")
#: Grad-CAM's automatic layer has at least this many cells per side of its map when the network offers one
MIN_CELLS = 4
#: how far apart the two axes' downsampling factors of an automatic layer may be, once either side of the map may be
#: one cell off (see :func:`consistent_map`)
SCALE_TOLERANCE = 1.5


def consistent_map(shape: tuple[int, ...] | None, input_hw: tuple[int, int] | None) -> bool:
    """Whether a 4-D output reads as a ``(B, C, h, w)`` map of an ``input_hw`` image: a feature map with ``h <= H``,
    ``w <= W`` and one downsampling factor for both axes: ``H / h`` and ``W / w`` within :data:`SCALE_TOLERANCE` of
    each other when either side may be one cell off. Strided layers round each side by less than a cell (the factors
    then agree exactly, whatever the aspect ratio); the tolerance leaves room for the few border cells unpadded
    convolutions lose on a non-square input. What it refuses: a channels-last ``(B, h, w, C)`` map, read as ``w = C``
    (swin_t at 64x64: ``(B, 4, 4, 384)`` is 384 cells wide; at 224x224 its ``(B, 56, 56, 96)`` has factors 4 and
    2.3), and a ``(B, heads, T, T)`` attention matrix with more tokens than the input has rows. ``input_hw`` None:
    any feature map."""
    if not is_feature_map(shape):
        return False
    if input_hw is None:
        return True
    (h, w), (height, width) = map_size(shape), input_hw
    if h > height or w > width:
        return False
    low_h, high_h = height / (h + 1), height / max(h - 1, 1)  # the factor's range when h may be one cell off
    low_w, high_w = width / (w + 1), width / max(w - 1, 1)
    return max(low_h / high_w, low_w / high_h) <= SCALE_TOLERANCE


def ordered_candidates(traces: list[LayerTrace], input_hw: tuple[int, int] | None = None) -> list[str]:
    """Grad-CAM's candidate layers, most preferred first: modules that run once, do not merely resample (VGG's
    ``AdaptiveAvgPool2d((7, 7))``) and return a map :func:`consistent_map` with the input; the last to finish first
    (``layer4``, not ``layer4.1.relu``), those with at least :data:`MIN_CELLS` cells a side before the others."""
    by_name = {t.name: t for t in traces}
    candidates = [
        n
        for n in gradcam_candidates(traces)
        if by_name[n].module_type not in RESAMPLING_TYPES and consistent_map(by_name[n].output_shape, input_hw)
    ]
    detailed = [n for n in candidates if min(map_size(by_name[n].output_shape)) >= MIN_CELLS]
    return [*reversed(detailed), *reversed([n for n in candidates if n not in detailed])]


def auto_gradcam_layer(
    traces: list[LayerTrace], model: nn.Module | None = None, input_hw: tuple[int, int] | None = None
) -> str | None:
    """Grad-CAM's preferred layer by shape alone: a known ViT's :func:`transformer_gradcam_layer`, else the first of
    :func:`ordered_candidates`. :func:`~lightning_xai.explain.layer_choice.choose_gradcam_layer` also puts it to the
    cut test (every path from the input to the logits passes through it) and walks on if it fails."""
    if model is not None:
        vit_layer = transformer_gradcam_layer(model)
        if vit_layer is not None and any(t.name == vit_layer and t.calls == 1 for t in traces):
            return vit_layer
    ordered = ordered_candidates(traces, input_hw)
    return ordered[0] if ordered else None


def map_size(shape: tuple[int, ...] | None) -> tuple[int, int]:
    """``(h, w)`` of a ``(B, C, h, w)`` output shape; ``(0, 0)`` for anything else."""
    return (int(shape[2]), int(shape[3])) if shape is not None and len(shape) == 4 else (0, 0)


#: ViT layouts as (class token attribute, path of the blocks, a block's first LayerNorm): torchvision, timm-style
VIT_LAYOUTS = (("class_token", "encoder.layers", "ln_1"), ("cls_token", "blocks", "norm1"))


def transformer_gradcam_layer(model: nn.Module) -> str | None:
    """The Grad-CAM layer of a known ViT layout (torchvision, timm-style) in ``model``: the last block's first
    LayerNorm, whose patch tokens still get a gradient (the final LayerNorm's reach no head); else None."""
    for prefix, module in model.named_modules():
        for token, path, norm in VIT_LAYOUTS:
            container = functools.reduce(lambda parent, attr: getattr(parent, attr, None), path.split("."), module)
            blocks = list(container.named_children()) if isinstance(container, nn.Module) else []
            if hasattr(module, token) and blocks and isinstance(getattr(blocks[-1][1], norm, None), nn.Module):
                return f"{prefix}.{path}.{blocks[-1][0]}.{norm}".lstrip(".")
    return None


def token_prefix_count(model: nn.Module, layer_name: str) -> int | None:
    """Class/register tokens before the patch tokens in the innermost known ViT around ``layer_name``, else None."""
    found: int | None = None
    for prefix, module in model.named_modules():  # parents come before their children
        if prefix and not layer_name.startswith(f"{prefix}."):
            continue
        if isinstance(getattr(module, "num_prefix_tokens", None), int):
            found = int(module.num_prefix_tokens)
        elif hasattr(module, "class_token") and hasattr(module, "encoder"):
            found = 1
    return found


def token_grid(num_tokens: int, height: int, width: int) -> tuple[int, int] | None:
    """``(h, w)`` with ``h * w == num_tokens`` and ``h / w == height / width`` exactly, else None."""
    if num_tokens < 1 or height < 1 or width < 1:
        return None
    a, b = height // math.gcd(height, width), width // math.gcd(height, width)
    k = math.isqrt(num_tokens // (a * b))
    return (k * a, k * b) if k * k * a * b == num_tokens else None


def resolve_module(model: nn.Module, layer: str | nn.Module, what: str = "GradCam.layer") -> tuple[str, nn.Module]:
    """``(dotted_name, module)`` for a dotted name or a module of ``model``; else a ``ValueError``."""
    named = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer and name:
                return name, module
        raise ValueError(
            f"`{what}` received a module ({type(layer).__name__}) that is not a submodule of "
            f"{type(model).__name__}. Pass a module of the LightningModule itself or its dotted name."
        )
    if layer in named and layer:
        return layer, named[layer]
    names = [n for n in named if n]
    close = [n for n in names if layer in n] or difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    hint = f" Did you mean one of {close}?" if close else ""
    raise ValueError(
        f"`{what}={layer!r}` is not a module of {type(model).__name__}.{hint} "
        "Use a dotted name from `dict(model.named_modules())`, the module itself, or None to choose "
        "the last spatial feature map automatically."
    )
