"""Attribution methods behind one small interface, each a thin wrapper around Captum.

An :class:`Explainer` turns a batch of probes and their targets into an :class:`Explanation`: the raw map that
drift is measured on, a non-negative map at input resolution for display and localisation, and per-probe
diagnostics (e.g. the Integrated Gradients completeness gap). All methods run batched, on the model's device,
in whatever grad/eval context the caller set up (see :func:`lightning_xai.guard.training_state_guard`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from captum import attr as captum_attr
from torch import Tensor, nn

from lightning_xai.layers import (
    auto_gradcam_layer,
    gradcam_candidates,
    is_feature_map,
    resolve_module,
    trace_modules,
)

ForwardFn = Callable[[Tensor], Tensor]


@dataclass
class Explanation:
    """One method's result for all probes.

    Attributes:
        raw: ``(P, h, w)`` float32 attribution map drift is measured on (signs kept; drift uses ``|raw|``).
        display: ``(P, H, W)`` float32, non-negative, at the input's resolution: what is drawn and localised.
        diagnostics: per-probe ``(P,)`` tensors, e.g. ``{"completeness_gap": ...}``.
    """

    raw: Tensor
    display: Tensor
    diagnostics: dict[str, Tensor] = field(default_factory=dict)


class Explainer(ABC):
    """Interface of an attribution method used by :class:`~lightning_xai.AttributionMonitor`."""

    #: name used in TensorBoard tags (``xai/<name>/...``) and in ``methods=``
    name: str = ""
    #: forward(+backward) passes per probe, for the cost model and budgets
    passes_per_probe: float = 1.0
    #: how ``display`` maps are scaled to [0, 1] per image: "max" or "percentile" (robust to a few hot pixels)
    display_normalization: str = "max"

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:  # noqa: B027
        """Validate against the model before training starts (``example`` is one probe, batch of 1)."""

    @abstractmethod
    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        """Attribute ``forward(inputs)[i, targets[i]]`` for every probe ``i``."""


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


def auto_internal_batch_size(num_probes: int, n_steps: int, target: int = 64) -> int:
    """Internal batch for IG: a whole number of probe groups close to ``target`` samples per pass.

    Example::

        >>> auto_internal_batch_size(8, 32), auto_internal_batch_size(100, 32)
        (64, 100)
    """
    steps_per_chunk = max(1, min(n_steps, target // max(num_probes, 1)))
    return num_probes * steps_per_chunk


class IntegratedGradients(Explainer):
    """Integrated Gradients: the path integral of gradients from a baseline to the input.

    Computes ``(x - x') * integral_0^1 dF(x' + a (x - x'))/dx da`` per input feature (Sundararajan et al.,
    2017, https://arxiv.org/abs/1703.01365) with Captum's ``IntegratedGradients`` and Gauss–Legendre
    quadrature. The completeness gap ``sum(attr) - (F(x) - F(x'))`` is returned per probe. The attribution is
    summed over channels into one map per probe; ``display`` is its absolute value.

    Args:
        n_steps: quadrature points (forward+backward passes per probe).
        baseline: None (zeros), a float (constant image) or a tensor broadcastable to one probe.
        internal_batch_size: samples per forward/backward pass; None picks a whole number of probe groups
            near 64 samples, so memory stays bounded.

    Example::

        >>> lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> ig = IntegratedGradients(n_steps=8)
        >>> out = ig.explain(lin, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]))
        >>> tuple(out.raw.shape), bool(out.diagnostics["completeness_gap"].abs().max() < 1e-4)
        ((3, 2, 2), True)
    """

    name = "integrated_gradients"
    display_normalization = "percentile"

    def __init__(
        self,
        n_steps: int = 32,
        baseline: float | Tensor | None = None,
        internal_batch_size: int | None = None,
    ) -> None:
        if n_steps < 1:
            raise ValueError(f"`ig_steps` must be >= 1, got {n_steps}.")
        self.n_steps = n_steps
        self.baseline = baseline
        self.internal_batch_size = internal_batch_size
        self.passes_per_probe = float(n_steps + 1)

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        if isinstance(self.baseline, Tensor):
            try:
                torch.broadcast_shapes(tuple(self.baseline.shape), tuple(example.shape))
            except RuntimeError:
                raise ValueError(
                    f"`ig_baseline` has shape {tuple(self.baseline.shape)}, which does not broadcast to a probe "
                    f"batch of shape {tuple(example.shape)}; pass one image (C, H, W), a float, or None for zeros."
                ) from None

    def _baselines(self, inputs: Tensor) -> Tensor:
        if self.baseline is None:
            return torch.zeros_like(inputs)
        if isinstance(self.baseline, Tensor):
            return self.baseline.to(inputs).expand_as(inputs).contiguous()
        return torch.full_like(inputs, float(self.baseline))

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        batch = self.internal_batch_size or auto_internal_batch_size(inputs.shape[0], self.n_steps)
        attr, delta = captum_attr.IntegratedGradients(forward).attribute(
            inputs,
            baselines=self._baselines(inputs),
            target=targets.tolist(),
            n_steps=self.n_steps,
            method="gausslegendre",
            internal_batch_size=max(batch, inputs.shape[0]),
            return_convergence_delta=True,
        )
        attr = attr.float()
        raw = attr.sum(dim=1) if attr.ndim == 4 else attr.reshape(attr.shape[0], *attr.shape[-2:])
        return Explanation(raw=raw, display=raw.abs(), diagnostics={"completeness_gap": delta.detach().float().abs()})


METHODS: dict[str, type[Explainer]] = {
    "gradcam": GradCam,
    "integrated_gradients": IntegratedGradients,
}
ALIASES: dict[str, str] = {"grad_cam": "gradcam", "ig": "integrated_gradients"}
