"""Integrated Gradients with Captum, batched in whole probe groups and returning the completeness gap."""

from __future__ import annotations

import torch
from captum import attr as captum_attr
from torch import Tensor, nn

from lightning_xai.explainers.base import Explainer, Explanation, ForwardFn


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
