"""What the thin Captum explainers share: a module around the forward function (for Captum methods that hook the
model's layers), a seeded RNG that leaves every training stream untouched, and the reduction of an input-shaped
attribution to the ``raw``/``display`` maps of an :class:`~lightning_xai.explain.base.Explanation`."""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.explain.base import ForwardFn
from lightning_xai.explain.guard import isolated_rng

#: how an attribution's channels become one map: ``"sum"`` keeps the sign (Input×Gradient, IG, DeepLift, LRP),
#: ``"abs_max"`` is the largest magnitude over channels (gradient saliency, Simonyan et al. 2014)
REDUCTIONS = ("sum", "abs_max")


class ForwardModule(nn.Module):
    """``forward(x)`` as an ``nn.Module`` that holds the model as its child, for Captum methods that take a
    module and hook its layers (DeepLift, LRP, guided backpropagation): the hooks reach the model's layers, and
    the call still goes through the monitor's forward (``output_transform``, ``forward_fn``, float32 copies).

    Example::

        >>> net = nn.Linear(2, 3)
        >>> wrapped = ForwardModule(net, lambda x: net(x) * 2)
        >>> tuple(wrapped(torch.ones(1, 2)).shape), next(wrapped.children()) is net
        ((1, 3), True)
    """

    def __init__(self, model: nn.Module, forward: ForwardFn) -> None:
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x)


@contextmanager
def seeded_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Inside the block, torch (CPU and ``device``), numpy and Python draw from streams seeded with ``seed``;
    on exit every stream is back where it was, so a stochastic method (SmoothGrad's noise, GradientSHAP's and
    LIME's samples) gives the same map for the same model every evaluation and the training run never sees it.

    Example::

        >>> with seeded_rng(3):
        ...     a = torch.rand(2)
        >>> with seeded_rng(3):
        ...     b = torch.rand(2)
        >>> bool(torch.equal(a, b))
        True
    """
    with isolated_rng(device):
        torch.random.default_generator.manual_seed(seed)
        if device is not None and device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)  # this device only (isolated_rng restores it)
        np.random.seed(seed)
        random.seed(seed)
        yield


@contextmanager
def quiet_captum() -> Iterator[None]:
    """Silence the ``UserWarning``s Captum emits on every call (inputs that did not require grad, hooks set on
    nonlinearities), which would otherwise repeat in the training log every evaluation."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"captum(\.|$)")
        yield


def reduce_channels(attribution: Tensor, reduce: str = "sum") -> Tensor:
    """``(P, C, h, w)`` (or ``(P, h, w)``) attribution -> ``(P, h, w)`` float32 map.

    Example::

        >>> a = torch.tensor([[[[1.0]], [[-3.0]]]])  # P=1, C=2, 1x1
        >>> reduce_channels(a, "sum").item(), reduce_channels(a, "abs_max").item()
        (-2.0, 3.0)
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"`reduce` must be one of {REDUCTIONS}, got {reduce!r}.")
    a = attribution.detach().float()
    if a.ndim == 3:
        return a.abs() if reduce == "abs_max" else a
    if a.ndim != 4:
        raise ValueError(f"an attribution must be (P, C, h, w) or (P, h, w), got shape {tuple(attribution.shape)}.")
    return a.abs().amax(dim=1) if reduce == "abs_max" else a.sum(dim=1)


def to_display(raw: Tensor, size: tuple[int, ...]) -> Tensor:
    """``|raw|`` at the input's ``size`` (bilinear when the map is coarser), the non-negative map that is drawn."""
    display = raw.abs()
    if tuple(display.shape[-2:]) != tuple(size):
        display = F.interpolate(display[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return display.clamp_min(0)


def snapshot_attributes(model: nn.Module) -> list[tuple[nn.Module, dict[str, Any]]]:
    """The instance attributes of every module, to undo what a Captum method does to them (LRP sets
    ``activations`` on layers, and deletes every layer's ``rule``, a user's own included): pass the result to
    :func:`restore_attributes`."""
    return [(m, dict(vars(m))) for m in model.modules()]


def restore_attributes(snapshot: list[tuple[nn.Module, dict[str, Any]]]) -> None:
    """Delete the instance attributes a module gained since :func:`snapshot_attributes` and put back those it lost.

    Example::

        >>> net = nn.Linear(1, 1)
        >>> net.rule = "mine"
        >>> saved = snapshot_attributes(net)
        >>> del net.rule
        >>> net.activations = {}
        >>> restore_attributes(saved)
        >>> net.rule, hasattr(net, "activations")
        ('mine', False)
    """
    for module, saved in snapshot:
        current = vars(module)
        for name in [n for n in current if n not in saved]:
            delattr(module, name)
        for name, value in saved.items():
            if name not in current:
                setattr(module, name, value)


def primitive(value: Any) -> Any:
    """A short primitive describing ``value`` for :meth:`~lightning_xai.explain.base.Explainer.config`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor):
        if value.numel() == 1:
            return float(value)
        return f"tensor{tuple(value.shape)}:{float(value.double().sum()):.6g}"
    if isinstance(value, (tuple, list)):
        return [primitive(v) for v in value]
    return getattr(value, "__qualname__", type(value).__qualname__)


def expand_baseline(baseline: float | Tensor | None, inputs: Tensor) -> Tensor:
    """One reference input per probe: None -> zeros, a float -> a constant image, a tensor broadcastable to one
    probe (e.g. ``(C, 1, 1)`` per-channel values) or to the batch.

    Example::

        >>> tuple(expand_baseline(torch.tensor([1.0, 2.0]).view(2, 1, 1), torch.zeros(3, 2, 4, 4)).shape)
        (3, 2, 4, 4)
    """
    if baseline is None:
        return torch.zeros_like(inputs)
    if isinstance(baseline, (int, float)):
        return torch.full_like(inputs, float(baseline))
    b = baseline.detach().to(device=inputs.device, dtype=inputs.dtype)
    try:
        return torch.broadcast_to(b, inputs.shape).clone()
    except RuntimeError as err:
        raise ValueError(
            f"the baseline of shape {tuple(b.shape)} does not broadcast to the probes {tuple(inputs.shape)}; pass a "
            "float, a tensor shaped like one probe (C, H, W), or per-channel values (C, 1, 1)."
        ) from err
