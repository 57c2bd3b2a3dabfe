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
from lightning_xai.explain.layer_choice import LayerChoice, choose_gradcam_layer, logits_reach
from lightning_xai.explain.layers import (
    LayerTrace,
    consistent_map,
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
    """``(B, prefix + height * width, C)`` tokens -> ``(B, C, height, width)``: the patch tokens, row by row."""
    return tokens[:, prefix:, :].reshape(len(tokens), height, width, -1).permute(0, 3, 1, 2)


def capture_output(module: nn.Module, forward: ForwardFn, inputs: Tensor) -> tuple[Tensor, Tensor]:
    """``(forward(inputs), module's output)``, the output requiring grad; the forward goes on with a clone of it."""
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _args: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor):
            raise TypeError(f"the layer `{type(module).__name__}` returned {type(output).__name__}, not a tensor")
        captured.append(output if output.requires_grad else output.detach().requires_grad_(True))
        return captured[-1].clone()

    handle = module.register_forward_hook(hook)
    try:
        logits = forward(inputs)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"the layer ran {len(captured)} times in one forward pass, expected once")
    return logits, captured[0]


class GradCam(Explainer):
    """Grad-CAM ``ReLU(sum_k alpha_k A^k)`` of a feature layer, ``alpha_k`` the spatial mean of the target's gradient
    for channel ``A^k`` (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391); Captum, bilinear upsampling.

    A transformer's ``(B, tokens, C)`` output is reshaped to ``(B, C, h, w)`` first (``reshape``, or automatically
    when the tokens after the class/prefix tokens are a patch grid with the input's aspect ratio).

    Args:
        layer: dotted module name, the module itself, or None: a known ViT's last block's first LayerNorm, else the
            last module (at least 4x4 cells preferred) returning a (B, C, h, w) map with the input's layout that runs
            once per forward, does not merely resample, and passes the cut test: every path from the input to the
            logits passes through it (:func:`~lightning_xai.explain.layer_choice.choose_gradcam_layer`).
        reshape: a picklable callable mapping the layer's output to ``(B, C, h, w)`` (e.g. ``functools.partial``).

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
        >>> cam, x = GradCam(), torch.rand(2, 1, 8, 8, requires_grad=True)
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
        self.layer_choice: LayerChoice | None = None  # how the automatic layer was chosen
        self._module: nn.Module | None = None
        self._to_grid: GradcamReshape | None = None  # None: the layer already returns (B, C, h, w)

    def config(self) -> dict[str, Any]:
        layer = self.layer if self.layer is None or isinstance(self.layer, str) else f"<{type(self.layer).__name__}>"
        reshape = None if self.reshape is None else getattr(self.reshape, "__qualname__", type(self.reshape).__name__)
        return {"layer": layer, "reshape": reshape}

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        traces = trace_modules(model, forward, example)
        candidates, what = gradcam_candidates(traces), f"{type(self).__name__}.layer"
        if self.layer is None:
            self.layer_choice = choose_gradcam_layer(model, forward, example, traces)
            self.layer_name = self.layer_choice.name
            if self.layer_name is None:
                raise ValueError(_no_layer_message(model, traces, example, self.layer_choice))
        else:
            try:
                self.layer_name, _ = resolve_module(model, self.layer, what)
            except ValueError as err:
                raise ValueError(f"{err} Layers Grad-CAM can use: {candidates[-10:]}.") from None
        self._module = dict(model.named_modules())[self.layer_name]
        trace = next((t for t in traces if t.name == self.layer_name), None)
        if trace is None:
            raise ValueError(
                f"`{what}={self.layer_name!r}` never ran during a forward pass of the probes, so Grad-CAM cannot use "
                f"it. Candidates that run: {candidates[-10:]}."
            )
        if trace.calls > 1:
            raise ValueError(
                f"`{what}={self.layer_name!r}` runs {trace.calls} times per forward pass (a reused module, e.g. one "
                "ReLU shared by several blocks); Captum only keeps its last call, so Grad-CAM would be wrong. Choose "
                f"a module that runs once, e.g. one of {candidates[-5:]}."
            )
        grid = self._grid_function(model, trace.output_shape, example, candidates)
        self._to_grid, self.token_layout, self.cells = grid
        if self.layer is not None:
            self._check_given_layer(model, forward, example, trace.output_shape)
        h, w = grid[2]
        if 0 < h * w <= 4:
            rank_zero_warn(
                f"AttributionMonitor: Grad-CAM's layer `{self.layer_name}` gives a map of only {h}x{w} cells for "
                f"{example.shape[-2]}x{example.shape[-1]} probes: it cannot say where in the image the evidence is, "
                "and its drift moves in coarse steps. Pass an earlier layer with `GradCam(layer=...)` (candidates: "
                f"{candidates[-6:]}) or larger probes."
            )

    def _check_given_layer(
        self, model: nn.Module, forward: ForwardFn, example: Tensor, shape: tuple[int, ...] | None
    ) -> None:
        """A given layer is used as given: refused only when the logits do not use it at all (Grad-CAM's gradient
        would never reach it); a warning when its 4-D output does not read as ``(B, C, h, w)`` of the probes. A
        layer on one branch is accepted quietly: it can be what the user means (a ViT's ``ln_1`` is one)."""
        name, module = str(self.layer_name), dict(model.named_modules())[str(self.layer_name)]
        if logits_reach(model, forward, module, example) is False:
            raise ValueError(
                f"`{type(self).__name__}.layer={name!r}`: the logits of {type(model).__name__} do not depend on "
                f"this layer (its output is computed, e.g. for an auxiliary loss, but no gradient from the logits "
                "reaches it), so Grad-CAM on it would be empty. Pass a layer on the way to the logits, or "
                "`layer=None` to choose one automatically."
            )
        hw = (int(example.shape[-2]), int(example.shape[-1]))
        if self.reshape is None and is_feature_map(shape) and not consistent_map(shape, hw):
            h, w = map_size(shape)
            rank_zero_warn(
                f"AttributionMonitor: Grad-CAM's layer `{name}` returns {shape}, read as (B, C, h, w): a {h}x{w} map "
                f"for {hw[0]}x{hw[1]} probes, not the input's layout (a channels-last (B, h, w, C) output? attention "
                "weights?). Pass `GradCam(reshape=...)` mapping it to (B, C, h, w), e.g. "
                "`functools.partial(torch.permute, dims=(0, 3, 1, 2))` for channels-last."
            )

    def _grid_function(
        self, model: nn.Module, shape: tuple[int, ...] | None, example: Tensor, candidates: list[str]
    ) -> tuple[GradcamReshape | None, tuple[int, int, int] | None, tuple[int, int]]:
        """The reshape to ``(B, C, h, w)`` (None: the output already is one), the token layout if tokens, and the
        ``(h, w)`` cells of the map Grad-CAM computes (after the reshape)."""
        name, what = self.layer_name, f"`{type(self).__name__}.layer={self.layer_name!r}`"
        other = ""
        if self.layer is None:  # not the user's choice: say so, and how to make one
            what = f"Grad-CAM's automatic layer `{name}` (the last block's first LayerNorm of a ViT layout)"
            other = f", or name a layer with `GradCam(layer=...)` (4-D candidates: {candidates[-6:]})"
        if self.reshape is not None:
            if shape is None:
                raise ValueError(f"{what} does not return a tensor; Grad-CAM cannot use it.")
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
            return self.reshape, None, map_size(tuple(grid.shape))
        if is_feature_map(shape):
            return None, None, map_size(shape)
        height, width = int(example.shape[-2]), int(example.shape[-1])
        if shape is not None and len(shape) == 3 and shape[0] == example.shape[0]:
            known = token_prefix_count(model, str(name))
            for prefix in [known] if known is not None else [1, 0]:
                grid_hw = token_grid(shape[1] - prefix, height, width)
                if grid_hw is not None and grid_hw[0] * grid_hw[1] > 1:
                    to_grid = functools.partial(tokens_to_grid, prefix=prefix, height=grid_hw[0], width=grid_hw[1])
                    return to_grid, (prefix, *grid_hw), grid_hw
            prefixes = f"the model's {known}" if known is not None else "0 or 1"
            raise ValueError(
                f"{what} returns tokens of shape {shape} (B, T, C), but T={shape[1]} minus {prefixes} prefix tokens "
                f"is not a patch grid with the probes' aspect ratio {height}x{width}. Pass `GradCam(reshape=...)` "
                f"mapping the output to (B, C, h, w){other}."
            )
        raise ValueError(
            f"{what} returns shape {shape}, not a 4-D (B, C, H, W) feature map with H*W > 1 nor (B, tokens, C) patch "
            f"tokens. Pass `GradCam(reshape=...)` mapping it to (B, C, h, w), or choose one of {candidates[-10:]}."
        )

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        if self._module is None:
            raise RuntimeError("GradCam.setup() must run before explain().")
        if self._to_grid is None:
            gradcam = captum_attr.LayerGradCam(forward, self._module)
            cam = gradcam.attribute(inputs, target=targets.tolist(), relu_attributions=True)
        else:  # the same computation on the reshaped layer output and its gradient
            logits, activations = capture_output(self._module, forward, inputs)
            index = targets.to(logits.device).long().view(-1, 1)
            score = logits.gather(1, index).sum()  # probes are independent in eval mode: d(sum)/dA_i = dy_i/dA_i
            (grads,) = torch.autograd.grad(score, activations)
            fmap, gmap = self._to_grid(activations.detach()).float(), self._to_grid(grads).float()
            if fmap.ndim != 4 or fmap.shape[0] != inputs.shape[0]:
                raise ValueError(f"`GradCam.reshape` returned shape {tuple(fmap.shape)}, expected (B, C, h, w)")
            cam = torch.relu((gmap.mean(dim=(2, 3), keepdim=True) * fmap).sum(dim=1, keepdim=True))
        cam = cam.float()
        display = captum_attr.LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
        return Explanation(raw=cam[:, 0], display=display[:, 0].clamp_min(0))


class AtGradCamLayer:
    """Mixin of a method that works at Grad-CAM's layer (``layer``, ``reshape``: see :class:`GradCam`)."""

    name: str
    _model: nn.Module | None = None

    def __init__(self, layer: str | nn.Module | None = None, reshape: GradcamReshape | None = None) -> None:
        self.gradcam = GradCam(layer=layer, reshape=reshape)

    @property
    def layer_name(self) -> str | None:
        return self.gradcam.layer_name

    def config(self) -> dict[str, Any]:
        return self.gradcam.config()

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        try:
            self.gradcam.setup(model, forward, example)
        except ValueError as err:
            raise ValueError(f"{self.name!r} uses Grad-CAM's layer: {err}") from None
        self._model = model


def _no_layer_message(model: nn.Module, traces: list[LayerTrace], example: Tensor, choice: LayerChoice) -> str:
    """Why Grad-CAM found no automatic layer: no feature map with the input's layout, or none passed the cut test."""
    name, hw = type(model).__name__, (int(example.shape[-2]), int(example.shape[-1]))
    fix = (
        "Pass `GradCam(layer=...)` naming the layer to explain (with `reshape=` if its output is not (B, C, h, w); "
        "a layer you name is used as given), or use `methods=('integrated_gradients',)`."
    )
    if choice.shares:
        tested = ", ".join(f"`{n}` leaves {share:.1%}" for n, share in list(choice.shares.items())[:6])
        more = f" and {len(choice.shares) - 6} more" if len(choice.shares) > 6 else ""
        return (
            f"`methods` includes 'gradcam' but none of the {len(choice.shares)} last feature maps of {name} is a layer "
            "every path from the input to the logits passes through, so Grad-CAM on any of them would miss the "
            "evidence that flows past it: with a layer's output detached, the input gradient of the predicted "
            f"logit keeps this share of its L1 mass (1% at most passes): {tested}{more}. {fix}"
        )
    skipped = {t.name: t.output_shape for t in traces if is_feature_map(t.output_shape) and t.calls == 1}
    skipped = {n: s for n, s in skipped.items() if not consistent_map(s, hw)}
    left_out = (
        f" 4-D outputs left out because (h, w) is not the probes' layout (channels-last, attention weights): "
        f"{dict(list(skipped.items())[-4:])}."
        if skipped
        else ""
    )
    return (
        f"`methods` includes 'gradcam' but {name} has no module that returns a 4-D (B, C, h, w) feature map with "
        f"h*w > 1 downsampled alike in both axes from probes of shape {tuple(example.shape[1:])} (last module "
        f"outputs: { {t.name: t.output_shape for t in traces[-8:]} }).{left_out} Grad-CAM needs a convolutional "
        f"feature layer. {fix}"
    )
