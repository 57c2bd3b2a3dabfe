"""The pieces of :attr:`AttributionMonitor.state_key`: short, stable descriptions of the settings that shape the
monitor's checkpointed state (methods and their parameters, probes, target)."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

from lightning_xai.explain import Explainer, GradCam, IntegratedGradients
from lightning_xai.probes.targets import TargetSpec


def digest(tensor: Tensor) -> str:
    data = tensor.detach().cpu().contiguous()
    return f"{tuple(data.shape)}:{hashlib.sha1(data.numpy().tobytes()).hexdigest()[:12]}"


def callable_name(fn: Any) -> str | None:
    if fn is None:
        return None
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def explainer_key(explainer: Explainer) -> tuple[Any, ...]:
    if isinstance(explainer, GradCam):
        layer = (
            explainer.layer
            if explainer.layer is None or isinstance(explainer.layer, str)
            else (f"<{type(explainer.layer).__name__}>")
        )
        return (explainer.name, layer, callable_name(explainer.reshape))
    if isinstance(explainer, IntegratedGradients):
        baseline = explainer.baseline
        return (explainer.name, explainer.n_steps, digest(baseline) if isinstance(baseline, Tensor) else baseline)
    return (explainer.name, type(explainer).__qualname__)


def source_key(probes: Any) -> Any:
    if probes is None:
        return None
    if isinstance(probes, Tensor):
        return digest(probes)
    if isinstance(probes, tuple):
        return tuple(digest(torch.as_tensor(p)) for p in probes)
    return type(probes).__qualname__


def target_key(target: TargetSpec) -> Any:
    if isinstance(target, (str, int)):
        return target
    return tuple(torch.as_tensor(target).reshape(-1).tolist())
