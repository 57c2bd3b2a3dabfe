"""lightning_xai: explainability that watches a PyTorch Lightning model while it trains."""

from lightning_xai.drift.alerts import AlertEvidence, AlertRegion, DriftAlert, DriftRule
from lightning_xai.drift.detector import Detection, ShiftDetector
from lightning_xai.explain import (
    LRP,
    Activations,
    CaptumExplainer,
    DeepLift,
    Explainer,
    Explanation,
    Filters,
    FunctionExplainer,
    GradCam,
    GradientShap,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    Lime,
    Occlusion,
    Saliency,
    SmoothGrad,
)
from lightning_xai.explain.sanity import SanityCheck, SanityResult, sanity_check
from lightning_xai.monitor import AttributionMonitor, DriftDetectedError
from lightning_xai.settings import Budget, Display, DriftPolicy

__all__ = ["AttributionMonitor", "DriftPolicy", "Display", "Budget", "AlertEvidence", "AlertRegion", "DriftAlert",
           "DriftDetectedError", "DriftRule", "Detection", "ShiftDetector", "Explainer", "Explanation", "GradCam",
           "IntegratedGradients", "LRP", "Activations", "CaptumExplainer", "DeepLift", "Filters", "FunctionExplainer",
           "GradientShap", "GuidedGradCam", "InputXGradient", "Lime", "Occlusion", "Saliency", "SmoothGrad",
           "SanityCheck", "SanityResult", "sanity_check"]  # fmt: skip
__version__ = "0.1.0"
