"""Gradient-based attributions with Captum: gradient saliency, SmoothGrad, Input×Gradient, GradientSHAP and
DeepLift. Each is one Captum call on the whole probe batch (SmoothGrad and GradientSHAP in slices of at most
``batch_size`` samples), on the model's device, under the caller's guard (eval mode, frozen parameters).

The random draws of SmoothGrad and GradientSHAP come from streams seeded with ``seed`` inside
:func:`~lightning_xai.explain.wrapping.seeded_rng`: the same model gives the same map every evaluation (so drift
measures the model, not the noise) and no training RNG stream moves.
"""

from __future__ import annotations

from typing import Any

import torch
from captum import attr as captum_attr
from torch import Tensor, nn

from lightning_xai.explain.base import Explainer, Explanation, ForwardFn
from lightning_xai.explain.layers import trace_modules
from lightning_xai.explain.wrapping import (
    ForwardModule,
    expand_baseline,
    primitive,
    quiet_captum,
    reduce_channels,
    seeded_rng,
    to_display,
)

#: samples per forward/backward pass of the sampling methods when nothing else is said
DEFAULT_BATCH = 64


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}.")
    return value


def _signed_maps(attribution: Tensor, inputs: Tensor) -> tuple[Tensor, Tensor]:
    raw = reduce_channels(attribution, "sum")
    return raw, to_display(raw, tuple(inputs.shape[-2:]))


class Saliency(Explainer):
    """Gradient saliency: ``max_c |d y_t / d x_c|``, the largest absolute gradient of the target logit over the
    channels of each pixel (Simonyan et al., 2014, https://arxiv.org/abs/1312.6034), with Captum's ``Saliency``.

    One forward and one backward pass per probe: the cheapest map, and the noisiest (gradients of ReLU networks
    are piecewise constant and shatter); SmoothGrad averages it over noisy copies.

    Example::

        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = Saliency().explain(lin, torch.rand(1, 1, 2, 2), torch.tensor([1]))
        >>> torch.allclose(out.raw.flatten(), lin[1].weight[1].abs())
        True
    """

    name = "saliency"
    passes_per_probe = 1.0
    display_normalization = "percentile"

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        with quiet_captum():
            grads = captum_attr.Saliency(forward).attribute(inputs, target=targets, abs=True)
        raw = reduce_channels(grads, "abs_max")
        return Explanation(raw=raw, display=raw.clone())


class SmoothGrad(Explainer):
    """SmoothGrad: gradient saliency averaged over ``samples`` copies of the probe with Gaussian noise of standard
    deviation ``noise × (max - min)`` of the probes' values (Smilkov et al., 2017,
    https://arxiv.org/abs/1706.03825), with Captum's ``NoiseTunnel(Saliency)`` (``nt_type="smoothgrad"``).

    The noise is drawn from a stream seeded with ``seed`` (the same noise every evaluation, the training RNG
    untouched). Cost: ``samples`` forward+backward passes per probe.

    Args:
        samples: noisy copies per probe (the paper: 50; 16 is the usual knee of visual quality per cost).
        noise: noise level as a share of the probes' value range (the paper: 0.10-0.20).
        seed: seed of the noise.
        batch_size: at most this many samples per pass.

    Example::

        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = SmoothGrad(samples=4).explain(lin, torch.rand(1, 1, 2, 2), torch.tensor([0]))
        >>> torch.allclose(out.raw.flatten(), lin[1].weight[0].abs())  # a linear model's gradient has no noise
        True
    """

    name = "smoothgrad"
    display_normalization = "percentile"

    def __init__(self, samples: int = 16, noise: float = 0.15, seed: int = 0, batch_size: int = DEFAULT_BATCH) -> None:
        self.samples = _check_int("samples", samples, 1)
        if not isinstance(noise, (int, float)) or isinstance(noise, bool) or noise < 0:
            raise ValueError(f"`noise` must be a number >= 0, got {noise!r}.")
        self.noise = float(noise)
        self.seed = _check_int("seed", seed, 0)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.passes_per_probe = float(samples)

    def config(self) -> dict[str, Any]:
        return {"samples": self.samples, "noise": self.noise, "seed": self.seed}

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        stdev = self.noise * float(inputs.detach().amax() - inputs.detach().amin())
        tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(forward))
        per_pass = max(1, self.batch_size // len(inputs))
        with seeded_rng(self.seed, inputs.device), quiet_captum():
            grads = tunnel.attribute(
                inputs,
                nt_type="smoothgrad",
                nt_samples=self.samples,
                nt_samples_batch_size=min(per_pass, self.samples),
                stdevs=stdev,
                target=targets,
                abs=True,
            )
        raw = reduce_channels(grads, "abs_max")
        return Explanation(raw=raw, display=raw.clone())


class InputXGradient(Explainer):
    """Input×Gradient: ``sum_c x_c · d y_t / d x_c``, the first-order Taylor contribution of each pixel to the
    target logit (Shrikumar et al., 2016, https://arxiv.org/abs/1605.01713), with Captum's ``InputXGradient``.

    Equals Integrated Gradients with a zero baseline for a linear model, at the cost of one pass per probe.
    Zero wherever the input is zero (a black background after no normalisation).

    Example::

        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.rand(1, 1, 2, 2)
        >>> out = InputXGradient().explain(lin, x, torch.tensor([1]))
        >>> torch.allclose(out.raw.flatten(), x.flatten() * lin[1].weight[1])
        True
    """

    name = "input_x_gradient"
    passes_per_probe = 1.0
    display_normalization = "percentile"

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        with quiet_captum():
            attribution = captum_attr.InputXGradient(forward).attribute(inputs, target=targets)
        raw, display = _signed_maps(attribution, inputs)
        return Explanation(raw=raw, display=display)


class GradientShap(Explainer):
    """GradientSHAP: the expected gradient × (input − baseline) at random points between the probe (with optional
    Gaussian noise) and baselines drawn from a distribution, an approximation of SHAP values (Lundberg & Lee,
    2017, https://arxiv.org/abs/1705.07874; expected gradients: Erion et al., 2021), with Captum's
    ``GradientShap``. Summed over channels (signed).

    Args:
        baselines: the reference distribution: a ``(B, C, H, W)`` tensor of reference images (or one
            ``(C, H, W)`` image, or a float). None (default): the all-zero input and the probes themselves, a
            small background drawn from the data, as expected gradients does with training images (with one
            probe, only zeros).
        samples: random points per probe (``n_samples``): the cost in forward+backward passes per probe.
        stdevs: standard deviation of the noise added to the probe before each sample (Captum's default 0).
        seed: seed of the draws (the same every evaluation; the training RNG untouched).
        batch_size: at most this many samples per pass.

    Example::

        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x, b = torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2)
        >>> out = GradientShap(baselines=b, samples=4).explain(lin, x, torch.tensor([0]))
        >>> torch.allclose(out.raw.flatten(), (x - b).flatten() * lin[1].weight[0], atol=1e-6)
        True
    """

    name = "gradient_shap"
    display_normalization = "percentile"

    def __init__(
        self,
        baselines: Tensor | float | None = None,
        samples: int = 16,
        stdevs: float = 0.0,
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self.baselines = baselines
        self.samples = _check_int("samples", samples, 1)
        self.stdevs = float(stdevs)
        self.seed = _check_int("seed", seed, 0)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.passes_per_probe = float(samples)

    def config(self) -> dict[str, Any]:
        return {
            "baselines": primitive(self.baselines),
            "samples": self.samples,
            "stdevs": self.stdevs,
            "seed": self.seed,
        }

    def _baselines(self, inputs: Tensor) -> Tensor:
        if self.baselines is None:
            return torch.cat([torch.zeros_like(inputs[:1]), inputs.detach()]) if len(inputs) > 1 else inputs * 0
        if isinstance(self.baselines, (int, float)):
            return torch.full_like(inputs[:1], float(self.baselines))
        b = self.baselines.detach().to(device=inputs.device, dtype=inputs.dtype)
        if b.ndim == inputs.ndim - 1:
            b = b[None]
        if b.ndim != inputs.ndim or tuple(b.shape[1:]) != tuple(inputs.shape[1:]):
            return expand_baseline(b, inputs[:1])  # broadcastable to one probe, e.g. (C, 1, 1)
        return b

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        baselines = self._baselines(inputs)
        shap = captum_attr.GradientShap(forward)
        chunk = max(1, self.batch_size // self.samples)  # probes per call: each expands to `samples` rows
        parts = []
        with seeded_rng(self.seed, inputs.device), quiet_captum():
            for start in range(0, len(inputs), chunk):
                sl = slice(start, start + chunk)
                parts.append(
                    shap.attribute(
                        inputs[sl], baselines=baselines, n_samples=self.samples, stdevs=self.stdevs, target=targets[sl]
                    )
                )
        raw, display = _signed_maps(torch.cat(parts), inputs)
        return Explanation(raw=raw, display=display)


class DeepLift(Explainer):
    """DeepLift (Rescale rule): each pixel's share of ``y_t(x) - y_t(x')``, propagated with the ratio of output to
    input differences through every nonlinearity, relative to a reference input ``x'`` (Shrikumar et al., 2017,
    https://arxiv.org/abs/1704.02685), with Captum's ``DeepLift``. Summed over channels (signed).

    Summation-to-delta: ``sum(attr) = y_t(x) - y_t(x')``; the per-probe miss is logged as ``completeness_gap``
    (0 up to rounding for networks whose nonlinearities are modules Captum knows, e.g. ``nn.ReLU``).
    Nonlinearities called as functions (``F.relu``) are passed as plain gradients, which breaks the summation
    (a non-zero gap shows it). One forward pass on probes and references and one backward pass.

    Args:
        baseline: the reference input: None (zeros), a float, or a tensor broadcastable to one probe. By name in
            ``methods=`` it is the monitor's ``ig_baseline`` (black with ``denormalize=``).

    Raises at setup: ``ValueError`` naming a nonlinearity module that runs more than once per forward (a
    shared ``ReLU``, as in torchvision's ResNet blocks): Captum's DeepLift cannot handle a reused module.

    Example::

        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> dl, x = DeepLift(), torch.rand(1, 1, 2, 2)
        >>> dl.setup(lin, lin, x)
        >>> torch.allclose(dl.explain(lin, x, torch.tensor([1])).raw.flatten(), x.flatten() * lin[1].weight[1])
        True
    """

    name = "deeplift"
    passes_per_probe = 2.0
    display_normalization = "percentile"

    def __init__(self, baseline: float | Tensor | None = None) -> None:
        self.baseline = baseline
        self._model: nn.Module | None = None

    def config(self) -> dict[str, Any]:
        return {"baseline": primitive(self.baseline)}

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

        types = {t.__name__ for t in SUPPORTED_NON_LINEAR}
        reused = [t for t in trace_modules(model, forward, example) if t.calls > 1 and t.module_type in types]
        if reused:
            names = ", ".join(f"`{t.name}` ({t.module_type}, {t.calls} calls)" for t in reused[:5])
            raise ValueError(
                f"`methods` includes 'deeplift' but {type(model).__name__} calls the nonlinearity module(s) {names} "
                "more than once per forward pass; Captum's DeepLift needs one module per use. Give each use its own "
                "module, or choose 'integrated_gradients' or 'gradient_shap'."
            )
        expand_baseline(self.baseline, example)  # fails now, naming the shapes, if it does not fit
        self._model = model

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        if self._model is None:
            raise RuntimeError("DeepLift.setup() must run before explain().")
        deeplift = captum_attr.DeepLift(ForwardModule(self._model, forward))
        with quiet_captum():
            attribution, delta = deeplift.attribute(
                inputs, baselines=expand_baseline(self.baseline, inputs), target=targets, return_convergence_delta=True
            )
        raw, display = _signed_maps(attribution, inputs)
        return Explanation(raw=raw, display=display, diagnostics={"completeness_gap": delta.detach().float().abs()})

    def __getstate__(self) -> dict[str, Any]:  # the model is not part of the explainer's picklable state
        state = self.__dict__.copy()
        state["_model"] = None
        return state
