"""Build the monitor's explainers from ``methods=`` (names or instances) and the ``gradcam_*``/``ig_*`` arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lightning_xai.explain import ALIASES, EXPLAIN_KEYWORDS, METHODS, Explainer, GradCam, IntegratedGradients
from lightning_xai.explain.gradcam import GradcamReshape


def build_explainers(
    methods: Sequence[str | Explainer],
    gradcam_layer: str | torch.nn.Module | None,
    gradcam_reshape: GradcamReshape | None,
    ig_steps: int | Literal["auto"],
    ig_baseline: float | Tensor | None,
    ig_internal_batch_size: int | None,
) -> list[Explainer]:
    if isinstance(methods, str):
        methods = (methods,)
    explainers: list[Explainer] = []
    for method in methods:
        if isinstance(method, Explainer):
            explainers.append(method)
            continue
        name = ALIASES.get(str(method), str(method))
        if name == "gradcam":
            explainers.append(GradCam(layer=gradcam_layer, reshape=gradcam_reshape))
        elif name == "integrated_gradients":
            explainers.append(IntegratedGradients(ig_steps, ig_baseline, ig_internal_batch_size))
        else:
            raise ValueError(
                f"`methods` contains unknown method {method!r}; choose from {sorted(METHODS)} "
                f"(aliases {sorted(ALIASES)}) or pass an Explainer instance."
            )
    for explainer in explainers:
        unknown = set(explainer.explain_keywords) - EXPLAIN_KEYWORDS
        if unknown:
            raise ValueError(
                f"`methods` contains {type(explainer).__name__} whose `explain_keywords` lists {sorted(unknown)}; "
                f"the monitor offers only {sorted(EXPLAIN_KEYWORDS)}. Fix the name or drop it."
            )
    names = [e.name for e in explainers]
    if len(set(names)) != len(names):
        raise ValueError(f"`methods` lists a method twice: {names}.")
    return explainers
