"""lightning_xai: explainability that watches a PyTorch Lightning model while it trains."""

from lightning_xai.drift.alerts import DriftAlert, DriftRule
from lightning_xai.explain import Explainer, Explanation, GradCam, IntegratedGradients
from lightning_xai.monitor import AttributionMonitor, DriftDetectedError

__all__ = [
    "AttributionMonitor",
    "DriftAlert",
    "DriftDetectedError",
    "DriftRule",
    "Explainer",
    "Explanation",
    "GradCam",
    "IntegratedGradients",
]
__version__ = "0.1.0"
