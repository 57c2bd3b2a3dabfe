"""Gradient attributions with Captum: saliency, SmoothGrad, Input×Gradient, GradientSHAP and DeepLift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from captum import attr as captum_attr
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
from torch import Tensor, nn

from lightning_xai.explain.base import ForwardFn, check_baseline_shape
from lightning_xai.explain.layers import trace_modules
from lightning_xai.explain.wrapping import CaptumMethod, expand_baseline

#: samples per forward/backward pass of the sampling methods when nothing else is said
DEFAULT_BATCH = 64


class Saliency(CaptumMethod):
    """Gradient saliency ``max_c |d y_t / d x_c|`` (Simonyan et al., 2014, https://arxiv.org/abs/1312.6034).

    Example::

        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = Saliency().explain(lin, torch.rand(1, 1, 2, 2), torch.tensor([1]))
        >>> torch.allclose(out.raw.flatten(), lin[1].weight[1].abs())
        True
    """

    name = "saliency"
    captum_cls = captum_attr.Saliency
    reduce = "abs_max"
    attribute_kwargs = {"abs": True}


@dataclass(eq=False)
class SmoothGrad(CaptumMethod):
    """SmoothGrad: saliency averaged over noisy copies (Smilkov et al., 2017, https://arxiv.org/abs/1706.03825).

    Args:
        samples: noisy copies per probe: forward+backward passes per probe.
        noise: standard deviation of the noise as a share of the probes' value range (the paper: 0.10-0.20).
        seed: seed of the noise.
        batch_size: at most this many samples per pass.

    Example::

        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = SmoothGrad(samples=4).explain(lin, torch.rand(1, 1, 2, 2), torch.tensor([0]))
        >>> torch.allclose(out.raw.flatten(), lin[1].weight[0].abs())  # a linear model's gradient has no noise
        True
    """

    samples: int = 16
    noise: float = 0.15
    seed: int = 0
    batch_size: int = DEFAULT_BATCH
    name = "smoothgrad"
    reduce = "abs_max"
    minimums = {"samples": 1, "noise": 0.0, "seed": 0, "batch_size": 1}

    def build(self, forward: ForwardFn) -> Any:
        return captum_attr.NoiseTunnel(captum_attr.Saliency(forward))

    def attribute(self, method: Any, inputs: Tensor, targets: Tensor, batch: Tensor) -> Any:
        stdev = self.noise * float(inputs.detach().amax() - inputs.detach().amin())
        per_pass = min(max(1, self.batch_size // len(inputs)), self.samples)
        kwargs = {"nt_samples": self.samples, "nt_samples_batch_size": per_pass, "stdevs": stdev, "abs": True}
        return method.attribute(inputs, nt_type="smoothgrad", target=targets, **kwargs)


class InputXGradient(CaptumMethod):
    """Input×Gradient ``sum_c x_c · d y_t / d x_c`` (Shrikumar et al., 2016, https://arxiv.org/abs/1605.01713).

    Example::

        >>> lin, x = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(1, 1, 2, 2)
        >>> out = InputXGradient().explain(lin, x, torch.tensor([1]))
        >>> torch.allclose(out.raw.flatten(), x.flatten() * lin[1].weight[1])
        True
    """

    name = "input_x_gradient"
    captum_cls = captum_attr.InputXGradient


@dataclass(eq=False)
class GradientShap(CaptumMethod):
    """GradientSHAP: expected gradient × (input − reference) at random points towards references drawn from a
    distribution (Lundberg & Lee, 2017, https://arxiv.org/abs/1705.07874).

    Args:
        baseline: the reference distribution: None (zeros and the probes themselves), one reference (a float or a
            tensor broadcastable to one probe), or a ``(B, C, H, W)`` batch of references.
        samples: random points per probe: forward+backward passes per probe.
        stdevs: standard deviation of the noise added to the probe before each sample.
        seed: seed of the draws.
        batch_size: at most this many samples per pass.

    Example::

        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x, b = torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2)
        >>> out = GradientShap(baseline=b, samples=4).explain(lin, x, torch.tensor([0]))
        >>> torch.allclose(out.raw.flatten(), (x - b).flatten() * lin[1].weight[0], atol=1e-6)
        True
    """

    baseline: float | Tensor | None = None
    samples: int = 16
    stdevs: float = 0.0
    seed: int = 0
    batch_size: int = DEFAULT_BATCH
    name = "gradient_shap"
    captum_cls = captum_attr.GradientShap
    minimums = {"samples": 1, "stdevs": 0.0, "seed": 0, "batch_size": 1}

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        rows = len(self.baseline) if isinstance(self.baseline, Tensor) and self.baseline.ndim == 4 else None
        check_baseline_shape("GradientShap(baseline=...)", self.baseline, tuple(example.shape[1:]), rows)

    def references(self, inputs: Tensor) -> Tensor:
        """The reference distribution for ``inputs``."""
        if isinstance(self.baseline, Tensor) and self.baseline.ndim == 4:
            return self.baseline.detach().to(inputs)
        one = expand_baseline(self.baseline, inputs[:1].detach())
        mixed = self.baseline is None and len(inputs) > 1  # the default background: zeros and the probes
        return torch.cat([one, inputs.detach()]) if mixed else one

    def probes_per_call(self, num_probes: int) -> int:
        return max(1, self.batch_size // self.samples)  # each probe expands to `samples` rows

    def attribute(self, method: Any, inputs: Tensor, targets: Tensor, batch: Tensor) -> Any:
        kwargs = {"n_samples": self.samples, "stdevs": self.stdevs}
        return method.attribute(inputs, baselines=self.references(batch), target=targets, **kwargs)


@dataclass(eq=False)
class DeepLift(CaptumMethod):
    """DeepLift (Rescale rule): each pixel's share of ``y_t(x) - y_t(x')`` for a reference input ``x'`` (Shrikumar
    et al., 2017, https://arxiv.org/abs/1704.02685), the miss as ``completeness_gap``; refuses reused nonlinearities.

    Args:
        baseline: the reference input: a float, a tensor broadcastable to one probe, or None: the input that
            displays as black, resolved by the monitor's registry from ``denormalize=``, else zeros.

    Example::

        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> dl, x = DeepLift(), torch.rand(1, 1, 2, 2)
        >>> dl.setup(lin, lin, x)
        >>> torch.allclose(dl.explain(lin, x, torch.tensor([1])).raw.flatten(), x.flatten() * lin[1].weight[1])
        True
    """

    baseline: float | Tensor | None = None
    name = "deeplift"
    passes_per_probe = 2.0
    captum_cls = captum_attr.DeepLift
    hooks_model = True

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        types = {t.__name__ for t in SUPPORTED_NON_LINEAR}
        reused = [t for t in trace_modules(model, forward, example) if t.calls > 1 and t.module_type in types]
        if reused:
            names = ", ".join(f"`{t.name}` ({t.module_type}, {t.calls} calls)" for t in reused[:5])
            raise ValueError(
                f"`methods` includes 'deeplift' but {type(model).__name__} calls the nonlinearity module(s) {names} "
                "more than once per forward pass; Captum's DeepLift needs one module per use. Give each use its own "
                "module, or choose 'integrated_gradients' or 'gradient_shap'."
            )
        super().setup(model, forward, example)

    def attribute(self, method: Any, inputs: Tensor, targets: Tensor, batch: Tensor) -> Any:
        return method.attribute(inputs, expand_baseline(self.baseline, inputs), targets, return_convergence_delta=True)
