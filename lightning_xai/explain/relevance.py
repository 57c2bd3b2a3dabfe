"""Methods that change how relevance flows backwards through the layers: Guided Grad-CAM and LRP, with Captum."""

from __future__ import annotations

import functools
from typing import Any

import torch
from captum import attr as captum_attr
from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
from torch import Tensor, nn

from lightning_xai.explain.base import Explanation, ForwardFn
from lightning_xai.explain.gradcam import AtGradCamLayer
from lightning_xai.explain.guard import restore_attributes, snapshot_attributes
from lightning_xai.explain.layers import trace_modules
from lightning_xai.explain.wrapping import CaptumMethod

#: leaf modules that only reshape (relevance passes through them unchanged as a plain gradient)
LRP_PASS_THROUGH = (nn.Flatten, nn.Unflatten, nn.Identity)
#: LRP's conservation gap ``|sum R - y_t| / |y_t|`` above which setup refuses the model
LRP_MAX_RELATIVE_GAP = 1000.0


class GuidedGradCam(AtGradCamLayer, CaptumMethod):
    """Guided Grad-CAM: guided backpropagation (Captum's ``GuidedBackprop``, negative gradients zeroed at every
    ``nn.ReLU``; Springenberg et al., 2015, https://arxiv.org/abs/1412.6806) times the upsampled
    :class:`~lightning_xai.explain.GradCam` map, summed over channels: pixel detail within Grad-CAM's region.

    Args:
        layer, reshape: Grad-CAM's layer and reshape (see :class:`~lightning_xai.explain.GradCam`).

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
        >>> ggc, x = GuidedGradCam(), torch.rand(2, 1, 8, 8)
        >>> ggc.setup(net, net, x[:1])
        >>> tuple(ggc.explain(net, x, torch.tensor([0, 2])).display.shape), ggc.layer_name
        ((2, 8, 8), '1')
    """

    name = "guided_gradcam"
    passes_per_probe = 2.0
    captum_cls = captum_attr.GuidedBackprop
    hooks_model = True

    def attribute(self, method: Any, inputs: Tensor, targets: Tensor, batch: Tensor) -> Any:
        cam = self.gradcam.explain(method.forward_func, inputs.detach().clone(), targets).display  # (P, H, W) >= 0
        return method.attribute(inputs, target=targets).detach() * cam[:, None]


class _CaptumLRP(captum_attr.LRP):
    """Captum's LRP over the layers it should see: shape-only layers and layers that never run are left out."""

    def __init__(self, model: nn.Module, skip: set[int]) -> None:
        super().__init__(model)
        self._skip = skip

    def _get_layers(self, model: nn.Module) -> None:
        super()._get_layers(model)
        self.layers = [layer for layer in self.layers if id(layer) not in self._skip]  # type: ignore[has-type]


class LRP(CaptumMethod):
    """Layer-wise relevance propagation: the target logit is redistributed backwards layer by layer in proportion to
    the contributions ``z_ij = x_i w_ij`` (ε-rule; Bach et al., 2015, https://doi.org/10.1371/journal.pone.0130140),
    with Captum's ``LRP``, summed over channels (signed); the miss of ``sum(R) ≈ y_t`` is ``conservation_gap``.

    It knows ``Conv2d``, ``Linear``, ``BatchNorm2d``, pooling, ``ReLU``, ``Tanh``, ``Dropout`` and keeps a rule set on
    a layer (``layer.rule = GammaRule()``). Setup refuses other layers, reused ones, and a relative gap over
    :data:`LRP_MAX_RELATIVE_GAP` (residual additions or functional calls, as in torchvision's ResNets).

    Example::

        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
        >>> lrp, x = LRP(), torch.rand(1, 1, 2, 2)
        >>> lrp.setup(lin, lin, x)
        >>> torch.allclose(lrp.explain(lin, x, torch.tensor([1])).raw.flatten(), x.flatten() * lin[1].weight[1])
        True
    """

    name = "lrp"
    passes_per_probe = 2.0
    captum_cls: Any = _CaptumLRP  # with the layers to skip, at setup
    hooks_model = True
    gap_name = "conservation_gap"
    attribute_kwargs = {"return_convergence_delta": True}

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        traces = {t.name: t for t in trace_modules(model, forward, example)}
        supported = (*SUPPORTED_LAYERS_WITH_RULES, *SUPPORTED_NON_LINEAR_LAYERS)
        skip, unsupported, reused = set(), [], []
        for name, module in ((n, m) for n, m in model.named_modules() if n and next(m.children(), None) is None):
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
        self._model, self.captum_cls = model, functools.partial(_CaptumLRP, skip=skip)
        with torch.no_grad():
            target = forward(example.detach()).argmax(dim=1)
        gap = float(self.explain(forward, example.detach().clone(), target).diagnostics["relative_gap"].max())
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
        saved = snapshot_attributes(self._model) if self._model is not None else []
        try:  # Captum sets `activations` on layers and deletes every layer's `rule`, a user's own included
            out = super().explain(forward, inputs, targets)
        finally:
            restore_attributes(saved)
        with torch.no_grad():
            logit = forward(inputs.detach()).gather(1, targets.view(-1, 1))[:, 0].float()
        out.diagnostics["relative_gap"] = out.diagnostics["conservation_gap"] / logit.abs().clamp_min(1e-12)
        return out
