"""Grad-CAM with Captum's ``LayerGradCam``: ReLU first, then bilinear upsampling."""

from __future__ import annotations

from captum import attr as captum_attr
from torch import Tensor, nn

from lightning_xai.explainers.base import Explainer, Explanation, ForwardFn
from lightning_xai.layers import (
    auto_gradcam_layer,
    gradcam_candidates,
    is_feature_map,
    resolve_module,
    trace_modules,
)


class GradCam(Explainer):
    """Grad-CAM: the class-discriminative localisation map of a convolutional feature layer.

    Computes ``ReLU(sum_k alpha_k A^k)`` where ``A^k`` are the channels of the chosen layer's output and
    ``alpha_k`` the spatial mean of the target logit's gradient with respect to ``A^k``
    (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391), with Captum's ``LayerGradCam``. The ReLU is
    applied before a bilinear upsampling to the input size (Captum's defaults are signed and nearest).

    Args:
        layer: dotted module name, the module itself, or None for the last module whose output is a spatial
            4-D feature map and which runs once per forward.

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
    passes_per_probe = 1.0

    def __init__(self, layer: str | nn.Module | None = None) -> None:
        self.layer = layer
        self.layer_name: str | None = None
        self._module: nn.Module | None = None

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        traces = trace_modules(model, forward, example)
        by_name = {t.name: t for t in traces}
        if self.layer is None:
            chosen = auto_gradcam_layer(traces)
            if chosen is None:
                shapes = {t.name: t.output_shape for t in traces[-8:]}
                raise ValueError(
                    f"`methods` includes 'gradcam' but {type(model).__name__} has no module that returns a "
                    f"4-D (B, C, H, W) feature map with H*W > 1 for probes of shape {tuple(example.shape[1:])} "
                    f"(last module outputs: {shapes}). Grad-CAM needs a convolutional feature layer: pass "
                    "`gradcam_layer=` explicitly, or use `methods=('integrated_gradients',)`."
                )
            self.layer_name = chosen
        else:
            try:
                self.layer_name, _ = resolve_module(model, self.layer)
            except ValueError as err:
                raise ValueError(f"{err} Layers Grad-CAM can use: {gradcam_candidates(traces)[-10:]}.") from None
        self._module = dict(model.named_modules())[self.layer_name]
        trace = by_name.get(self.layer_name)
        if trace is None:
            raise ValueError(
                f"`gradcam_layer={self.layer_name!r}` never ran during a forward pass of the probes, so Grad-CAM "
                f"cannot use it. Candidates that run: {gradcam_candidates(traces)[-10:]}."
            )
        if trace.calls > 1:
            raise ValueError(
                f"`gradcam_layer={self.layer_name!r}` runs {trace.calls} times per forward pass (a reused "
                "module, e.g. one ReLU shared by several blocks); Captum only keeps its last call, so Grad-CAM "
                f"would be wrong. Choose a module that runs once, e.g. one of "
                f"{gradcam_candidates(traces)[-5:]}."
            )
        if not is_feature_map(trace.output_shape):
            raise ValueError(
                f"`gradcam_layer={self.layer_name!r}` returns shape {trace.output_shape}, not a 4-D (B, C, H, W) "
                f"feature map with H*W > 1. Candidates: {gradcam_candidates(traces)[-10:]}."
            )

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        if self._module is None:
            raise RuntimeError("GradCam.setup() must run before explain().")
        cam = captum_attr.LayerGradCam(forward, self._module).attribute(
            inputs, target=targets.tolist(), relu_attributions=True
        )
        cam = cam.float()
        display = captum_attr.LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
        return Explanation(raw=cam[:, 0], display=display[:, 0].clamp_min(0))
