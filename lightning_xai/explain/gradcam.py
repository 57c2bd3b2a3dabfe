"""Grad-CAM with Captum's ``LayerGradCam``, and the same computation after a reshape for token outputs (ViTs)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from captum import attr as captum_attr
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_xai.explain.base import Explainer, Explanation, ForwardFn
from lightning_xai.explain.layers import (
    auto_gradcam_layer,
    gradcam_candidates,
    is_feature_map,
    map_size,
    resolve_module,
    token_grid,
    token_prefix_count,
    trace_modules,
)

GradcamReshape = Callable[[Tensor], Tensor]


def tokens_to_grid(tokens: Tensor, prefix: int, height: int, width: int) -> Tensor:
    """``(B, prefix + height * width, C)`` tokens -> ``(B, C, height, width)``: the patch tokens, row by row.

    Example::

        >>> tokens_to_grid(torch.arange(10.0).view(1, 5, 2), prefix=1, height=2, width=2)[0, 0]
        tensor([[2., 4.],
                [6., 8.]])
    """
    b, _, c = tokens.shape
    return tokens[:, prefix:, :].reshape(b, height, width, c).permute(0, 3, 1, 2)


class GradCam(Explainer):
    """Grad-CAM: the class-discriminative localisation map ``ReLU(sum_k alpha_k A^k)`` of a feature layer, ``alpha_k``
    the spatial mean of the target logit's gradient with respect to channel ``A^k`` (Selvaraju et al., 2017,
    https://arxiv.org/abs/1610.02391), with Captum's ``LayerGradCam``: ReLU, then bilinear upsampling.

    A transformer's ``(B, tokens, C)`` output is reshaped to ``(B, C, h, w)`` first (Captum would average over
    tokens): automatically when the tokens after the class/prefix tokens are a patch grid with the input's aspect
    ratio, or with ``reshape``; its gradient then comes from ``torch.autograd.grad`` through a forward hook.

    Args:
        layer: dotted module name, the module itself, or None: a known ViT's last block's first LayerNorm, else the
            last module returning a spatial 4-D map that runs once per forward and does not merely resample.
        reshape: a picklable callable mapping the layer's output to ``(B, C, h, w)`` (e.g. ``functools.partial``).

    Example::

        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 6 * 6, 3))
        >>> cam = GradCam()
        >>> x = torch.rand(2, 1, 8, 8, requires_grad=True)
        >>> cam.setup(net, net, x[:1])
        >>> cam.layer_name, tuple(cam.explain(net, x, torch.tensor([0, 2])).display.shape)
        ('1', (2, 8, 8))
    """

    name = "gradcam"

    def __init__(self, layer: str | nn.Module | None = None, reshape: GradcamReshape | None = None) -> None:
        if reshape is not None and not callable(reshape):
            raise ValueError(
                f"`GradCam.reshape` must be a callable mapping the layer output to (B, C, h, w), got {reshape!r}."
            )
        if layer is not None and not isinstance(layer, (str, nn.Module)):
            raise ValueError(
                f"`{type(self).__name__}.layer` must be a dotted module name, a module or None, got {layer!r}."
            )
        self.layer, self.reshape = layer, reshape
        self.layer_name: str | None = None
        self.cells: tuple[int, int] | None = None
        self.token_layout: tuple[int, int, int] | None = None  # (prefix tokens, h, w) of a token output
        self._module: nn.Module | None = None
        self._to_grid: GradcamReshape | None = None  # None: the layer already returns (B, C, h, w)

    def config(self) -> dict[str, Any]:
        layer = self.layer if self.layer is None or isinstance(self.layer, str) else f"<{type(self.layer).__name__}>"
        reshape = None if self.reshape is None else getattr(self.reshape, "__qualname__", type(self.reshape).__name__)
        return {"layer": layer, "reshape": reshape}

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        traces = trace_modules(model, forward, example)
        by_name = {t.name: t for t in traces}
        if self.layer is None:
            chosen = auto_gradcam_layer(traces, model)
            if chosen is None:
                shapes = {t.name: t.output_shape for t in traces[-8:]}
                raise ValueError(
                    f"`methods` includes 'gradcam' but {type(model).__name__} has no module that returns a "
                    f"4-D (B, C, H, W) feature map with H*W > 1 for probes of shape {tuple(example.shape[1:])} "
                    f"(last module outputs: {shapes}). Grad-CAM needs a convolutional feature layer: pass "
                    "`GradCam(layer=...)` explicitly (with `reshape=` if its output is not (B, C, H, W)), or "
                    "use `methods=('integrated_gradients',)`."
                )
            self.layer_name = chosen
        else:
            try:
                self.layer_name, _ = resolve_module(model, self.layer, f"{type(self).__name__}.layer")
            except ValueError as err:
                raise ValueError(f"{err} Layers Grad-CAM can use: {gradcam_candidates(traces)[-10:]}.") from None
        self._module = dict(model.named_modules())[self.layer_name]
        trace = by_name.get(self.layer_name)
        if trace is None:
            raise ValueError(
                f"`{type(self).__name__}.layer={self.layer_name!r}` never ran during a forward pass of the "
                f"probes, so Grad-CAM "
                f"cannot use it. Candidates that run: {gradcam_candidates(traces)[-10:]}."
            )
        if trace.calls > 1:
            raise ValueError(
                f"`{type(self).__name__}.layer={self.layer_name!r}` runs {trace.calls} times per forward pass "
                f"(a reused "
                "module, e.g. one ReLU shared by several blocks); Captum only keeps its last call, so Grad-CAM "
                f"would be wrong. Choose a module that runs once, e.g. one of "
                f"{gradcam_candidates(traces)[-5:]}."
            )
        self._to_grid, self.token_layout = self._grid_function(model, trace.output_shape, example, traces)
        h, w = map_size(trace.output_shape) if self.token_layout is None else self.token_layout[1:]
        self.cells = (h, w)
        size = f"{h}x{w} cells for {example.shape[-2]}x{example.shape[-1]} probes"
        if 0 < h * w <= 4:
            rank_zero_warn(
                f"AttributionMonitor: Grad-CAM's layer `{self.layer_name}` gives a map of only {size}: it cannot "
                "say where in the image the evidence is, and its drift moves in coarse steps. Pass an earlier layer "
                f"with `GradCam(layer=...)` (candidates: {gradcam_candidates(traces)[-6:]}) or larger probes."
            )

    def _grid_function(
        self, model: nn.Module, shape: tuple[int, ...] | None, example: Tensor, traces: list[Any]
    ) -> tuple[GradcamReshape | None, tuple[int, int, int] | None]:
        name = self.layer_name
        if self.reshape is not None:
            if shape is None:
                raise ValueError(
                    f"`{type(self).__name__}.layer={name!r}` does not return a tensor; Grad-CAM cannot use it."
                )
            try:
                grid = self.reshape(torch.zeros(shape))
            except Exception as err:
                raise ValueError(
                    f"`GradCam.reshape` failed on the output of `{name}` (shape {shape}): {type(err).__name__}: "
                    f"{err}. It must map the layer output to a (B, C, h, w) map."
                ) from err
            if not isinstance(grid, Tensor) or grid.ndim != 4 or grid.shape[0] != shape[0]:
                got = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
                raise ValueError(
                    f"`GradCam.reshape` maps the output of `{name}` (shape {shape}) to {got}; Grad-CAM needs "
                    f"(B, C, h, w) with the same batch size B={shape[0]}."
                )
            return self.reshape, None
        if is_feature_map(shape):
            return None, None
        height, width = int(example.shape[-2]), int(example.shape[-1])
        if shape is not None and len(shape) == 3 and shape[0] == example.shape[0]:
            known = token_prefix_count(model, str(name))
            for prefix in [known] if known is not None else [1, 0]:
                grid_hw = token_grid(shape[1] - prefix, height, width)
                if grid_hw is not None and grid_hw[0] * grid_hw[1] > 1:
                    to_grid = functools.partial(tokens_to_grid, prefix=prefix, height=grid_hw[0], width=grid_hw[1])
                    return to_grid, (prefix, *grid_hw)
            prefixes = f"the model's {known}" if known is not None else "0 or 1"
            raise ValueError(
                f"`{type(self).__name__}.layer={name!r}` returns tokens of shape {shape} (B, T, C), but "
                f"T={shape[1]} minus "
                f"{prefixes} prefix tokens is not a patch grid with the probes' aspect ratio {height}x{width}. "
                "Pass `GradCam(reshape=...)` mapping the output to (B, C, h, w)."
            )
        raise ValueError(
            f"`{type(self).__name__}.layer={name!r}` returns shape {shape}, not a 4-D (B, C, H, W) feature map "
            f"with H*W > 1 "
            f"nor (B, tokens, C) patch tokens. Pass `GradCam(reshape=...)` mapping it to (B, C, h, w), or choose one "
            f"of {gradcam_candidates(traces)[-10:]}."
        )

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        if self._module is None:
            raise RuntimeError("GradCam.setup() must run before explain().")
        if self._to_grid is None:
            cam = captum_attr.LayerGradCam(forward, self._module).attribute(
                inputs, target=targets.tolist(), relu_attributions=True
            )
        else:
            cam = self._reshaped_gradcam(forward, inputs, targets, self._module, self._to_grid)
        cam = cam.float()
        display = captum_attr.LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
        return Explanation(raw=cam[:, 0], display=display[:, 0].clamp_min(0))

    @staticmethod
    def _reshaped_gradcam(
        forward: ForwardFn, inputs: Tensor, targets: Tensor, module: nn.Module, to_grid: GradcamReshape
    ) -> Tensor:
        captured: list[Tensor] = []

        def hook(_module: nn.Module, _args: Any, output: Any) -> Tensor:
            if not isinstance(output, Tensor):
                raise TypeError(f"the Grad-CAM layer returned {type(output).__name__}, not a tensor")
            source = output if output.requires_grad else output.detach().requires_grad_(True)
            captured.append(source)
            return source.clone()  # later in-place ops change the clone, not the activations we differentiate

        handle = module.register_forward_hook(hook)
        try:
            logits = forward(inputs)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"the Grad-CAM layer ran {len(captured)} times in one forward pass, expected once")
        activations = captured[0]
        index = targets.to(logits.device).long().view(-1, 1)
        score = logits.gather(1, index).sum()  # probes are independent in eval mode: d(sum)/dA_i = dy_i/dA_i
        (grads,) = torch.autograd.grad(score, activations)
        fmap = to_grid(activations.detach()).float()
        gmap = to_grid(grads).float()
        if fmap.ndim != 4 or fmap.shape[0] != inputs.shape[0]:
            raise ValueError(f"`GradCam.reshape` returned shape {tuple(fmap.shape)}, expected (B, C, h, w)")
        alpha = gmap.mean(dim=(2, 3), keepdim=True)
        return torch.relu((alpha * fmap).sum(dim=1, keepdim=True))
