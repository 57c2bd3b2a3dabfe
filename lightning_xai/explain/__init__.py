"""Attribution methods behind one small interface: an :class:`Explainer` turns a batch of probes and their targets
into an :class:`Explanation` (the raw map drift is measured on, a display map at input resolution, per-probe
diagnostics), each a thin wrapper around Captum, batched, in the grad/eval context the caller set up
(:func:`lightning_xai.explain.guard.training_state_guard`)."""

from lightning_xai.explain.base import EXPLAIN_KEYWORDS, Explainer, Explanation, ForwardFn
from lightning_xai.explain.custom import CaptumExplainer, FunctionExplainer
from lightning_xai.explain.gradcam import GradCam
from lightning_xai.explain.gradients import DeepLift, GradientShap, InputXGradient, Saliency, SmoothGrad
from lightning_xai.explain.integrated_gradients import IntegratedGradients
from lightning_xai.explain.perturbation import Lime, Occlusion
from lightning_xai.explain.quality import QUALITY_MEASURES, check_quality
from lightning_xai.explain.registry import (
    REGISTRY,
    MethodEntry,
    build_explainers,
    canonical_name,
    method_names,
    register,
)
from lightning_xai.explain.relevance import LRP, GuidedGradCam
from lightning_xai.explain.views import Activations, Filters

__all__ = ["EXPLAIN_KEYWORDS", "REGISTRY", "MethodEntry", "build_explainers", "canonical_name", "method_names",
           "register", "Explainer", "Explanation", "ForwardFn", "GradCam", "IntegratedGradients", "QUALITY_MEASURES",
           "check_quality", "Activations", "CaptumExplainer", "DeepLift", "Filters", "FunctionExplainer",
           "GradientShap", "GuidedGradCam", "InputXGradient", "LRP", "Lime", "Occlusion", "Saliency",
           "SmoothGrad"]  # fmt: skip
