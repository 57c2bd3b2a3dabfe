"""The pieces of :attr:`AttributionMonitor.state_key`: short, stable descriptions of what identifies the monitor's
checkpointed state — the methods and their map-changing settings, the probes and the target. Alert rules,
thresholds, warm-up and how often to evaluate are not part of it: they may change on resume."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

from lightning_xai.explain import Explainer
from lightning_xai.probes.targets import TargetSpec


def digest(tensor: Tensor) -> str:
    """A short content hash of a tensor.

    Example::

        >>> digest(torch.zeros(2, 3))
        '(2, 3):...'
    """
    data = tensor.detach().cpu().contiguous()
    return f"{tuple(data.shape)}:{hashlib.sha1(data.numpy().tobytes()).hexdigest()[:8]}"


def explainer_key(explainer: Explainer) -> str:
    """``name(setting=value, ...)`` from the explainer's own :meth:`~Explainer.config`.

    Example::

        >>> from lightning_xai.explain import GradCam
        >>> explainer_key(GradCam(layer="features"))
        'gradcam(layer=features,reshape=None)'
    """
    parts = []
    for key, value in explainer.config().items():
        if isinstance(value, Tensor):
            value = digest(value)
        parts.append(f"{key}={value}")
    return f"{explainer.name}({','.join(parts)})"


def source_key(probes: Any, num_probes: int, seed: int) -> str:
    """The probe source: a digest of given tensors, or the draw (dataset/loader, ``num_probes``, ``seed``)."""
    if isinstance(probes, Tensor):
        name = digest(probes)
    elif isinstance(probes, tuple):
        name = "+".join(digest(torch.as_tensor(p)) for p in probes if p is not None)
    else:
        name = "val" if probes is None else type(probes).__qualname__
    return f"{name}[{num_probes},seed={seed}]"


def target_key(target: TargetSpec) -> str:
    if isinstance(target, (str, int)):
        return str(target)
    return digest(torch.as_tensor(target))


def monitor_state_key(
    name: str, explainers: list[Explainer], probes: Any, num_probes: int, seed: int, target: TargetSpec
) -> str:
    """E.g. ``AttributionMonitor{gradcam(layer=None,reshape=None);probes=val[8,seed=0];target=label}``."""
    methods = ";".join(explainer_key(e) for e in explainers)
    return f"{name}{{{methods};probes={source_key(probes, num_probes, seed)};target={target_key(target)}}}"
