"""One registry of the methods ``methods=`` knows by name: each name, its aliases and how to build it from the
monitor's method arguments (``gradcam_layer=``, ``ig_steps=``, ...). ``methods=`` and ``DriftRule(methods=)``
both resolve names here, so an alias means the same everywhere."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from lightning_xai.explain.base import EXPLAIN_KEYWORDS, NAME_PATTERN, NAME_RULE, Explainer, check_name, suggest_name
from lightning_xai.explain.gradcam import GradCam, GradcamReshape
from lightning_xai.explain.gradients import DeepLift, GradientShap, InputXGradient, Saliency, SmoothGrad
from lightning_xai.explain.integrated_gradients import IntegratedGradients
from lightning_xai.explain.perturbation import Lime, Occlusion
from lightning_xai.explain.relevance import LRP, GuidedGradCam
from lightning_xai.explain.views import Activations, Filters


@dataclass(frozen=True)
class MethodOptions:
    """The monitor's per-method arguments, handed to every builder (each reads its own)."""

    gradcam_layer: str | torch.nn.Module | None = None
    gradcam_reshape: GradcamReshape | None = None
    ig_steps: int | Literal["auto"] = "auto"
    ig_baseline: float | Tensor | None = None
    ig_internal_batch_size: int | None = None


@dataclass(frozen=True)
class MethodEntry:
    """A method known by name: its canonical name, aliases, and a builder from :class:`MethodOptions`."""

    name: str
    build: Callable[[MethodOptions], Explainer]
    aliases: tuple[str, ...] = field(default=())


REGISTRY: dict[str, MethodEntry] = {}


def register(entry: MethodEntry) -> None:
    """Add a method to the registry (its name and aliases must be new and follow
    :data:`~lightning_xai.explain.base.NAME_RULE`)."""
    for key in (entry.name, *entry.aliases):
        check_name("MethodEntry.name", key)
        if key in REGISTRY:
            raise ValueError(f"method name {key!r} is already registered")
        REGISTRY[key] = entry


register(
    MethodEntry("gradcam", lambda o: GradCam(layer=o.gradcam_layer, reshape=o.gradcam_reshape), aliases=("grad_cam",))
)
register(
    MethodEntry(
        "integrated_gradients",
        lambda o: IntegratedGradients(o.ig_steps, o.ig_baseline, o.ig_internal_batch_size),
        aliases=("ig",),
    )
)
# Options of the methods below beyond these (SmoothGrad's samples, LIME's superpixels, ...): pass an instance,
# e.g. ``methods=["gradcam", SmoothGrad(samples=32)]``. The reference input of DeepLift, Occlusion and LIME is
# Integrated Gradients' (``ig_baseline``: black with ``denormalize=``).
register(MethodEntry("saliency", lambda o: Saliency(), aliases=("gradient", "vanilla_gradient")))
register(MethodEntry("smoothgrad", lambda o: SmoothGrad(), aliases=("smooth_grad",)))
register(MethodEntry("input_x_gradient", lambda o: InputXGradient(), aliases=("gradient_x_input", "ixg")))
register(MethodEntry("gradient_shap", lambda o: GradientShap(), aliases=("gradientshap",)))
register(MethodEntry("deeplift", lambda o: DeepLift(baseline=o.ig_baseline), aliases=("deep_lift",)))
register(MethodEntry("occlusion", lambda o: Occlusion(baseline=o.ig_baseline)))
register(MethodEntry("lime", lambda o: Lime(baseline=o.ig_baseline)))
register(
    MethodEntry(
        "guided_gradcam",
        lambda o: GuidedGradCam(layer=o.gradcam_layer, reshape=o.gradcam_reshape),
        aliases=("guided_grad_cam",),
    )
)
register(MethodEntry("lrp", lambda o: LRP(), aliases=("layerwise_relevance_propagation",)))
register(MethodEntry("activations", lambda o: Activations(layer=o.gradcam_layer, reshape=o.gradcam_reshape)))
register(MethodEntry("filters", lambda o: Filters()))


def method_names() -> list[str]:
    """Canonical names, sorted.

    Example::

        >>> method_names()  # doctest: +NORMALIZE_WHITESPACE
        ['activations', 'deeplift', 'filters', 'gradcam', 'gradient_shap', 'guided_gradcam', 'input_x_gradient',
         'integrated_gradients', 'lime', 'lrp', 'occlusion', 'saliency', 'smoothgrad']
    """
    return sorted({e.name for e in REGISTRY.values()})


def alias_names() -> list[str]:
    """Every accepted spelling that is not a canonical name."""
    return sorted(k for k, e in REGISTRY.items() if k != e.name)


def canonical_name(name: str) -> str:
    """The canonical name of a registered method or alias; other names (custom explainers) are returned as they are.

    Example::

        >>> canonical_name("ig"), canonical_name("grad_cam"), canonical_name("my_method")
        ('integrated_gradients', 'gradcam', 'my_method')
    """
    entry = REGISTRY.get(name)
    return entry.name if entry is not None else name


def build_explainers(methods: Sequence[str | Explainer] | str, options: MethodOptions) -> list[Explainer]:
    """Explainers for ``methods=`` (names, aliases or :class:`Explainer` instances), checked for unknown names,
    names that cannot be tags and directories (:data:`~lightning_xai.explain.base.NAME_RULE`), unsupported
    ``explain_keywords`` and duplicates."""
    if isinstance(methods, str):
        methods = (methods,)
    explainers: list[Explainer] = []
    for method in methods:
        if isinstance(method, Explainer):
            explainers.append(method)
            continue
        entry = REGISTRY.get(method) if isinstance(method, str) else None
        if entry is None:
            raise ValueError(
                f"`methods` contains unknown method {method!r}; choose from {method_names()} "
                f"(aliases {alias_names()}) or pass an Explainer instance."
            )
        explainers.append(entry.build(options))
    for explainer in explainers:
        if not (isinstance(explainer.name, str) and NAME_PATTERN.fullmatch(explainer.name)):
            raise ValueError(
                f"`methods` contains {type(explainer).__name__} named {explainer.name!r}; an explainer's `name` must "
                f"be {NAME_RULE}, as it becomes part of tags, keys and log directories (xai/<name>/...). Set e.g. "
                f"name = {suggest_name(explainer.name)!r} on the class or instance."
            )
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
