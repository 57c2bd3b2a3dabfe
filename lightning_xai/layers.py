"""Find the layer Grad-CAM explains: trace one forward pass and look at what every module returned."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


@dataclass(frozen=True)
class LayerTrace:
    """What one module did during a traced forward pass."""

    name: str
    calls: int
    output_shape: tuple[int, ...] | None  # shape of the last call's tensor output; None if not a tensor
    order: int  # position of its last call among all module calls


def trace_modules(model: nn.Module, forward: Callable[[Tensor], object], example: Tensor) -> list[LayerTrace]:
    """Run ``forward(example)`` once and record, for each submodule, its call count and output shape.

    The caller is responsible for eval mode and grad mode (see ``training_state_guard``); every hook is
    removed before returning.

    Example::

        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
        >>> [t.name for t in trace_modules(net, net, torch.zeros(1, 1, 5, 5))]
        ['0', '1', '2']
    """
    names = {id(m): n for n, m in model.named_modules() if n}
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    order: dict[str, int] = {}
    counter = [0]

    def make_hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            shapes[name] = tuple(output.shape) if isinstance(output, Tensor) else None
            order[name] = counter[0]
            counter[0] += 1

        return hook

    handles: list[RemovableHandle] = []
    try:
        for module in model.modules():
            name = names.get(id(module))
            if name is not None:
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            forward(example)
    finally:
        for handle in handles:
            handle.remove()
    return sorted(
        (LayerTrace(n, calls[n], shapes[n], order[n]) for n in calls),
        key=lambda t: t.order,
    )


def is_feature_map(shape: tuple[int, ...] | None) -> bool:
    """A 4-D ``(B, C, H, W)`` output with more than one spatial cell."""
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1


def gradcam_candidates(traces: list[LayerTrace]) -> list[str]:
    """Names of modules that return a spatial feature map and run once per forward, in execution order."""
    return [t.name for t in traces if is_feature_map(t.output_shape) and t.calls == 1]


def auto_gradcam_layer(traces: list[LayerTrace]) -> str | None:
    """The last module (by completion order) whose output is a spatial 4-D feature map and runs once.

    Modules finish after their children, so when a block and its last child return the same map, the block
    (e.g. ``layer4`` of a ResNet, not ``layer4.1.relu``) is chosen.
    """
    candidates = gradcam_candidates(traces)
    return candidates[-1] if candidates else None


def resolve_module(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for a dotted name or a module of ``model``.

    Raises:
        ValueError: naming ``gradcam_layer`` when the name or module is not part of the model.
    """
    named = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer and name:
                return name, module
        raise ValueError(
            f"`gradcam_layer` received a module ({type(layer).__name__}) that is not a submodule of "
            f"{type(model).__name__}. Pass a module of the LightningModule itself or its dotted name."
        )
    if layer in named and layer:
        return layer, named[layer]
    names = [n for n in named if n]
    close = [n for n in names if layer in n] or difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    hint = f" Did you mean one of {close}?" if close else ""
    raise ValueError(
        f"`gradcam_layer={layer!r}` is not a module of {type(model).__name__}.{hint} "
        "Use a dotted name from `dict(model.named_modules())`, the module itself, or None to choose "
        "the last spatial feature map automatically."
    )
