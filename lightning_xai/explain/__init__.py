"""Attribution methods behind one small interface (:class:`Explainer`), each a thin wrapper around Captum.

An :class:`Explainer` turns a batch of probes and their targets into an :class:`Explanation`: the raw map that
drift is measured on, a non-negative map at input resolution for display and localisation, and per-probe
diagnostics (e.g. the Integrated Gradients completeness gap). All methods run batched, on the model's device,
in whatever grad/eval context the caller set up (see :func:`lightning_xai.explain.guard.training_state_guard`).
"""

from lightning_xai.explain.base import EXPLAIN_KEYWORDS, Explainer, Explanation, ForwardFn
from lightning_xai.explain.gradcam import GradCam
from lightning_xai.explain.integrated_gradients import IntegratedGradients, auto_internal_batch_size

METHODS: dict[str, type[Explainer]] = {
    "gradcam": GradCam,
    "integrated_gradients": IntegratedGradients,
}
ALIASES: dict[str, str] = {"grad_cam": "gradcam", "ig": "integrated_gradients"}

__all__ = [
    "ALIASES",
    "EXPLAIN_KEYWORDS",
    "METHODS",
    "Explainer",
    "Explanation",
    "ForwardFn",
    "GradCam",
    "IntegratedGradients",
    "auto_internal_batch_size",
]
