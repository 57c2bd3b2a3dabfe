"""Quality measures of the maps (``xai/<method>/quality/<measure>``, ``docs/quality.md``): deletion and insertion
AUC (RISE, https://arxiv.org/abs/1806.07421; ``2 × steps`` passes per probe), sparseness and entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_xai.explain.base import Explainer, Explanation, ForwardFn, check_int
from lightning_xai.explain.wrapping import expand_baseline
from lightning_xai.functional.quality import curve_auc, entropy, sparseness
from lightning_xai.probes import probabilities as class_probabilities

QUALITY_MEASURES = ("deletion", "insertion", "sparseness", "entropy")
#: perturbation steps of deletion and insertion (11 points on each curve)
DEFAULT_STEPS = 10
#: images per forward pass of deletion and insertion
DEFAULT_BATCH = 256


def check_quality(quality: Sequence[str] | str | None) -> tuple[str, ...]:
    """The measures asked for, without repeats; a ``ValueError`` names an unknown one.

    Example::

        >>> check_quality(("deletion", "entropy")), check_quality("sparseness"), check_quality(None)
        (('deletion', 'entropy'), ('sparseness',), ())
    """
    names = () if quality is None else (quality,) if isinstance(quality, str) else tuple(quality)
    unknown = [q for q in names if q not in QUALITY_MEASURES]
    if unknown:
        raise ValueError(
            f"`Display(quality=...)` contains unknown measure(s) {unknown}; choose from {list(QUALITY_MEASURES)}."
        )
    return tuple(dict.fromkeys(names))


def perturbation_curves(
    forward: ForwardFn,
    inputs: Tensor,
    targets: Tensor,
    relevance: Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    baseline: float | Tensor | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> tuple[Tensor, Tensor]:
    """``(P, steps + 1)`` deletion and insertion curves: the target class's probability (softmax; a single logit's
    sigmoid for class 1, one minus it for class 0) after removing (setting to ``baseline``, None: zeros) or keeping
    the ``round(k / steps × H × W)`` most relevant pixels, ``k = 0 .. steps``."""
    steps = check_int("steps", steps, 1)
    p, _, height, width = inputs.shape
    n = height * width
    if tuple(relevance.shape) != (p, height, width):
        raise ValueError(f"`relevance` must be (P, H, W) = {(p, height, width)}, got {tuple(relevance.shape)}.")
    inputs = inputs.detach()
    base = expand_baseline(baseline, inputs)
    order = relevance.detach().reshape(p, n).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=order.device).expand(p, n))
    rank = rank.view(p, 1, height, width)
    counts = [round(k * n / steps) for k in range(steps + 1)]
    # every image once: deletion_0 is the input and insertion_0 the baseline (and the other way round at the end)
    images = [inputs, base]
    for k in range(1, steps):
        removed = rank < counts[k]
        images += [torch.where(removed, base, inputs), torch.where(removed, inputs, base)]
    index, per_pass = targets.view(-1, 1), max(1, batch_size // p)
    with torch.no_grad():
        outputs = [
            forward(torch.cat(images[start : start + per_pass])).float() for start in range(0, len(images), per_pass)
        ]
    probs = class_probabilities(torch.cat(outputs))  # one logit: [1 - p, p]; read as probabilities or not, once
    probabilities = [q.gather(1, index)[:, 0] for q in probs.view(-1, p, probs.shape[1])]
    full, empty = probabilities[0], probabilities[1]
    deletion = torch.stack([full, *probabilities[2::2], empty], dim=1)
    insertion = torch.stack([empty, *probabilities[3::2], full], dim=1)
    return deletion, insertion


def quality_diagnostics(
    explainer: Explainer,
    forward: ForwardFn,
    inputs: Tensor,
    targets: Tensor,
    explanation: Explanation,
    measures: Sequence[str],
) -> dict[str, Tensor]:
    """Per-probe ``quality/...`` diagnostics of ``explanation``; a measure that fails is left out with a warning."""
    if not measures or not getattr(explainer, "is_attribution", True):
        return {}
    out: dict[str, Tensor] = {}
    relevance = explanation.display
    try:
        for measure, gauge in (("sparseness", sparseness), ("entropy", entropy)):
            if measure in measures:
                out[f"quality/{measure}"] = gauge(relevance)
        if {"deletion", "insertion"} & set(measures):
            curves = perturbation_curves(forward, inputs, targets, relevance)
            for measure, curve in zip(("deletion", "insertion"), curves, strict=True):
                if measure in measures:
                    out[f"quality/{measure}_auc"] = curve_auc(curve)
    except Exception as err:  # noqa: BLE001 - a quality measure never costs the explanation
        rank_zero_warn(f"AttributionMonitor: quality measures of {explainer.name} failed: {type(err).__name__}: {err}")
    return out
