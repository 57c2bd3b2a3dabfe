"""Methods that change how relevance flows backwards through the layers, with Captum: Guided Grad-CAM (guided
backpropagation × Grad-CAM) and layer-wise relevance propagation (LRP). Both hook the model's modules, so they
run Captum on a :class:`~lightning_xai.explain.wrapping.ForwardModule` holding the model; what Captum leaves on
the modules is removed after every call (the guard removes leftover hooks)."""

from __future__ import annotations

from typing import Any

import torch
from captum import attr as captum_attr
from torch import Tensor, nn

from lightning_xai.explain.base import Explainer, Explanation, ForwardFn
from lightning_xai.explain.gradcam import GradCam, GradcamReshape
from lightning_xai.explain.layers import trace_modules
from lightning_xai.explain.wrapping import (
    ForwardModule,
    quiet_captum,
    reduce_channels,
    restore_attributes,
    snapshot_attributes,
    to_display,
)

#: leaf modules that only reshape (relevance passes through them unchanged as a plain gradient)
LRP_PASS_THROUGH = (nn.Flatten, nn.Unflatten, nn.Identity)
#: LRP's conservation gap ``|sum R - y_t| / |y_t|`` above which setup refuses the model: relevance that grows
#: by orders of magnitude means operations LRP cannot see (residual additions, functional calls)
LRP_MAX_RELATIVE_GAP = 1000.0


class GuidedGradCam(Explainer):
    """Guided Grad-CAM: guided backpropagation (gradients with negative values zeroed at every ReLU, Springenberg
    et al., 2015, https://arxiv.org/abs/1412.6806) multiplied by the upsampled Grad-CAM map (Selvaraju et al.,
    2017, https://arxiv.org/abs/1610.02391): pixel-level detail within Grad-CAM's class-discriminative region.
    Captum's ``GuidedBackprop`` times this package's :class:`~lightning_xai.explain.GradCam` (same layer choice:
    ``gradcam_layer``/``gradcam_reshape``, ReLU then bilinear upsampling), summed over channels.

    Guided backpropagation acts on ``nn.ReLU`` modules only (``F.relu`` calls pass plain gradients). Cost: two
    forward+backward passes per probe.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
        >>> ggc, x = GuidedGradCam(), torch.rand(2, 1, 8, 8)
        >>> ggc.setup(net, net, x[:1])
        >>> tuple(ggc.explain(net, x, torch.tensor([0, 2])).display.shape), ggc.layer_name
        ((2, 8, 8), '1')
    """

    name = "guided_gradcam"
    passes_per_probe = 2.0
    display_normalization = "percentile"

    def __init__(self, layer: str | nn.Module | None = None, reshape: GradcamReshape | None = None) -> None:
        self.gradcam = GradCam(layer=layer, reshape=reshape)
        self._model: nn.Module | None = None

    @property
    def layer_name(self) -> str | None:
        return self.gradcam.layer_name

    def config(self) -> dict[str, Any]:
        return self.gradcam.config()

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        try:
            self.gradcam.setup(model, forward, example)
        except ValueError as err:
            raise ValueError(f"'guided_gradcam' uses Grad-CAM's layer: {err}") from None
        self._model = model

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        if self._model is None:
            raise RuntimeError("GuidedGradCam.setup() must run before explain().")
        cam = self.gradcam.explain(forward, inputs.detach().clone(), targets).display  # (P, H, W), >= 0
        with quiet_captum():
            guided = captum_attr.GuidedBackprop(ForwardModule(self._model, forward)).attribute(inputs, target=targets)
        raw = reduce_channels(guided.detach() * cam[:, None], "sum")
        return Explanation(raw=raw, display=to_display(raw, tuple(inputs.shape[-2:])))

    def __getstate__(self) -> dict[str, Any]:  # the model is not part of the explainer's picklable state
        state = self.__dict__.copy()
        state["_model"] = None
        return state


class _CaptumLRP(captum_attr.LRP):
    """Captum's LRP over the layers it should see: shape-only layers and layers that never run are left out."""

    def __init__(self, model: nn.Module, skip: set[int]) -> None:
        super().__init__(model)
        self._skip = skip

    def _get_layers(self, model: nn.Module) -> None:
        super()._get_layers(model)
        self.layers = [layer for layer in self.layers if id(layer) not in self._skip]  # type: ignore[has-type]


class LRP(Explainer):
    """Layer-wise relevance propagation: the target logit is redistributed backwards layer by layer, each neuron
    passing its relevance to its inputs in proportion to their contributions ``z_ij = x_i w_ij`` (ε-rule; Bach et
    al., 2015, https://doi.org/10.1371/journal.pone.0130140; Deep Taylor decomposition: Montavon et al., 2017),
    with Captum's ``LRP``, summed over channels (signed). ``sum(R) ≈ y_t`` minus what biases absorb; the per-probe
    miss is logged as ``conservation_gap``.

    Captum's LRP knows ``Conv2d``, ``Linear``, ``BatchNorm2d``, max/average pooling (ε-rule) and ``ReLU``,
    ``Tanh``, ``Dropout``; shape-only layers (``Flatten``, ``Identity``) are passed through. Another rule can be
    set per layer as Captum documents (``layer.rule = GammaRule()``); it is kept across calls. The model must
    compute with those modules in order: additions of residual branches or functional calls are invisible to it.

    Raises at setup: ``ValueError`` naming a layer LRP has no rule for, a layer that runs more than once per
    forward, or a model whose relevance is not conserved (relative gap over :data:`LRP_MAX_RELATIVE_GAP` on a
    probe, e.g. torchvision's ResNets: residual additions and a shared ReLU per block).

    Example::

        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
        >>> lrp, x = LRP(), torch.rand(1, 1, 2, 2)
        >>> lrp.setup(lin, lin, x)
        >>> torch.allclose(lrp.explain(lin, x, torch.tensor([1])).raw.flatten(), x.flatten() * lin[1].weight[1])
        True
    """

    name = "lrp"
    passes_per_probe = 2.0
    display_normalization = "percentile"

    def __init__(self) -> None:
        self._model: nn.Module | None = None
        self._skip: set[int] = set()

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS

        traces = {t.name: t for t in trace_modules(model, forward, example)}
        supported = (*SUPPORTED_LAYERS_WITH_RULES, *SUPPORTED_NON_LINEAR_LAYERS)
        skip, unsupported, reused = set(), [], []
        for name, module in model.named_modules():
            if not name or any(True for _ in module.children()):
                continue
            trace = traces.get(name)
            if trace is None or isinstance(module, LRP_PASS_THROUGH):
                skip.add(id(module))
            elif not hasattr(module, "rule") and type(module) not in supported:
                unsupported.append(f"`{name}` ({type(module).__name__})")
            elif trace.calls > 1 and type(module) not in SUPPORTED_NON_LINEAR_LAYERS:
                reused.append(f"`{name}` ({type(module).__name__}, {trace.calls} calls)")
        if unsupported:
            raise ValueError(
                f"`methods` includes 'lrp' but Captum's LRP has no rule for layer(s) {', '.join(unsupported[:5])} "
                f"of {type(model).__name__}. It supports {sorted(t.__name__ for t in supported)}. Set a rule on the "
                "layer (`layer.rule = captum.attr._utils.lrp_rules.EpsilonRule()`, if that rule is right for it), "
                "or choose another method ('deeplift', 'integrated_gradients')."
            )
        if reused:
            raise ValueError(
                f"`methods` includes 'lrp' but layer(s) {', '.join(reused[:5])} of {type(model).__name__} run more "
                "than once per forward pass; Captum's LRP needs one module per use."
            )
        self._model, self._skip = model, skip
        with torch.no_grad():
            target = forward(example.detach()).argmax(dim=1)
        out = self.explain(forward, example.detach().clone(), target)
        gap = float(out.diagnostics["relative_gap"].max())
        if not gap <= LRP_MAX_RELATIVE_GAP:
            self._model = None
            raise ValueError(
                f"`methods` includes 'lrp' but relevance is not conserved through {type(model).__name__}: on a probe "
                f"the relevances sum to {gap:.3g} times the target logit away from it. The model computes with "
                "operations LRP cannot see (residual additions, functional activations such as F.relu, or modules "
                "reused across blocks), as torchvision's ResNets do. Choose 'deeplift', 'integrated_gradients' or "
                "'gradient_shap' for it."
            )

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        if self._model is None:
            raise RuntimeError("LRP.setup() must run before explain().")
        saved = snapshot_attributes(self._model)
        try:
            with quiet_captum():
                lrp = _CaptumLRP(ForwardModule(self._model, forward), self._skip)
                relevance, delta = lrp.attribute(inputs, target=targets, return_convergence_delta=True)
        finally:
            restore_attributes(saved)
        with torch.no_grad():
            logit = forward(inputs.detach()).gather(1, targets.view(-1, 1))[:, 0].float()
        gap = delta.detach().float().abs()
        raw = reduce_channels(relevance, "sum")
        diagnostics = {"conservation_gap": gap, "relative_gap": gap / logit.abs().clamp_min(1e-12)}
        return Explanation(raw=raw, display=to_display(raw, tuple(inputs.shape[-2:])), diagnostics=diagnostics)

    def __getstate__(self) -> dict[str, Any]:  # the model is not part of the explainer's picklable state
        state = self.__dict__.copy()
        state["_model"] = None
        return state
