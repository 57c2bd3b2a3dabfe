"""The methods known by name (shorthand for their default instances; ``methods=`` and ``DriftRule(methods=)`` alike),
and the one place that resolves what depends on the run: IG, DeepLift, Occlusion and LIME left at ``baseline=None``
get the input that displays as black, names and instances alike."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from lightning_xai.explain.base import EXPLAIN_KEYWORDS, NAME_PATTERN, NAME_RULE, Explainer, check_name, suggest_name
from lightning_xai.explain.gradcam import GradCam
from lightning_xai.explain.gradients import DeepLift, GradientShap, InputXGradient, Saliency, SmoothGrad
from lightning_xai.explain.integrated_gradients import IntegratedGradients
from lightning_xai.explain.perturbation import Lime, Occlusion
from lightning_xai.explain.relevance import LRP, GuidedGradCam
from lightning_xai.explain.views import Activations, Filters


@dataclass(frozen=True)
class MethodEntry:
    """A method known by name: its canonical name, aliases, and what builds its default instance."""

    name: str
    build: Callable[[], Explainer]
    aliases: tuple[str, ...] = field(default=())


REGISTRY: dict[str, MethodEntry] = {}


def register(entry: MethodEntry) -> None:
    """Add a method to the registry (its name and aliases must be new and follow :data:`NAME_RULE`)."""
    for key in (entry.name, *entry.aliases):
        check_name("MethodEntry.name", key)
        if key in REGISTRY:
            raise ValueError(f"method name {key!r} is already registered")
        REGISTRY[key] = entry


register(MethodEntry("gradcam", GradCam, aliases=("grad_cam",)))
register(MethodEntry("integrated_gradients", IntegratedGradients, aliases=("ig",)))
register(MethodEntry("saliency", Saliency, aliases=("gradient", "vanilla_gradient")))
register(MethodEntry("smoothgrad", SmoothGrad, aliases=("smooth_grad",)))
register(MethodEntry("input_x_gradient", InputXGradient, aliases=("gradient_x_input", "ixg")))
register(MethodEntry("gradient_shap", GradientShap, aliases=("gradientshap",)))
register(MethodEntry("deeplift", DeepLift, aliases=("deep_lift",)))
register(MethodEntry("occlusion", Occlusion))
register(MethodEntry("lime", Lime))
register(MethodEntry("guided_gradcam", GuidedGradCam, aliases=("guided_grad_cam",)))
register(MethodEntry("lrp", LRP, aliases=("layerwise_relevance_propagation",)))
register(MethodEntry("activations", Activations))
register(MethodEntry("filters", Filters))

#: the methods whose reference input (``baseline=None``) is the input that displays as black, when known
BLACK_BASELINE: tuple[type[Explainer], ...] = (IntegratedGradients, DeepLift, Occlusion, Lime)


def method_names() -> list[str]:
    """Canonical names, sorted.

    Example::

        >>> method_names()  # doctest: +NORMALIZE_WHITESPACE
        ['activations', 'deeplift', 'filters', 'gradcam', 'gradient_shap', 'guided_gradcam', 'input_x_gradient',
         'integrated_gradients', 'lime', 'lrp', 'occlusion', 'saliency', 'smoothgrad']
    """
    return sorted({e.name for e in REGISTRY.values()})


def canonical_name(name: str) -> str:
    """The canonical name of a registered method or alias; other names (custom explainers) are returned as they are.

    Example::

        >>> canonical_name("ig"), canonical_name("grad_cam"), canonical_name("my_method")
        ('integrated_gradients', 'gradcam', 'my_method')
    """
    entry = REGISTRY.get(name)
    return entry.name if entry is not None else name


def build_explainers(methods: Sequence[str | Explainer] | str, black: Tensor | None = None) -> list[Explainer]:
    """Explainers for ``methods=`` (names, aliases or instances), checked (unknown names, names that cannot be tags,
    unsupported ``explain_keywords``, duplicates); ``black`` becomes the baseline of every :data:`BLACK_BASELINE`
    method left at ``baseline=None`` (in a copy).

    Example::

        >>> ig, deeplift = build_explainers(["ig", DeepLift()], black=Tensor([-2.0]))
        >>> ig.baseline.tolist(), deeplift.baseline.tolist(), ig.n_steps
        ([-2.0], [-2.0], 'auto')
    """
    explainers: list[Explainer] = []
    for method in (methods,) if isinstance(methods, str) else methods:
        explainer = REGISTRY[method].build() if isinstance(method, str) and method in REGISTRY else method
        if not isinstance(explainer, Explainer):
            aliases = sorted(k for k, e in REGISTRY.items() if k != e.name)
            raise ValueError(
                f"`methods` contains unknown method {method!r}; choose from {method_names()} "
                f"(aliases {aliases}) or pass an Explainer instance."
            )
        if black is not None and isinstance(explainer, BLACK_BASELINE) and getattr(explainer, "baseline", None) is None:
            explainer = copy.copy(explainer)
            explainer.baseline = black  # type: ignore[attr-defined]
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
        explainers.append(explainer)
    names = [e.name for e in explainers]
    if len(set(names)) != len(names):
        raise ValueError(f"`methods` lists a method twice: {names}.")
    return explainers
