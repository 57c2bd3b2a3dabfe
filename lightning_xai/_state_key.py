"""The parts of :attr:`AttributionMonitor.state_key`: what the checkpointed maps depend on (the methods and their
map-changing settings, the probes, the target) as short stable strings. Thresholds, rules and schedules may change
on resume, so they are not part of it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_xai.explain import Explainer


def digest(value: Any) -> str:
    """A short content hash of a tensor (or array-like): the package's one fingerprint.

    Example::

        >>> digest(torch.zeros(2, 3))
        '(2, 3):...'
    """
    data = torch.as_tensor(value).detach().cpu().contiguous()
    return f"{tuple(data.shape)}:{hashlib.sha1(data.numpy().tobytes()).hexdigest()[:8]}"


def state_key_parts(
    explainers: Sequence[Explainer], probes: Any, num_probes: int, seed: int, target: Any
) -> dict[str, Any]:
    """The keywords of ``Callback._generate_state_key``: each method as ``name(setting=value,...)`` from its
    :meth:`~Explainer.config` (tensors digested), the probe source (given tensors digested) and the target.

    Example::

        >>> from lightning_xai.explain import GradCam
        >>> state_key_parts([GradCam(layer="features")], None, 8, 0, "label")
        {'methods': ['gradcam(layer=features,reshape=None)'], 'probes': 'val[8,seed=0]', 'target': 'label'}
    """
    methods = []
    for e in explainers:
        settings = ",".join(f"{k}={digest(v) if isinstance(v, Tensor) else v}" for k, v in e.config().items())
        methods.append(f"{e.name}({settings})")
    if isinstance(probes, tuple):
        source = "+".join(digest(p) for p in probes if p is not None)
    elif isinstance(probes, Tensor):
        source = digest(probes)
    else:
        source = "val" if probes is None else type(probes).__qualname__
    return {
        "methods": methods,
        "probes": f"{source}[{num_probes},seed={seed}]",
        "target": str(target) if isinstance(target, (str, int)) else digest(target),
    }
