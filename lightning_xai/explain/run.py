"""One evaluation's explanations: the shared prediction pass and every method on the probes, under the
training-state guard, in float32, within an optional time budget. A failing method is skipped and reported.

This is the part of :class:`~lightning_xai.AttributionMonitor` that costs forward/backward passes; the
benchmarks in ``benchmarks/`` time exactly this function.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_xai.explain import Explainer, Explanation
from lightning_xai.explain.forward import ModelForwardFn, model_forward
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.quality import quality_diagnostics
from lightning_xai.probes.targets import TargetSpec, resolve_targets

WarnOnce = Callable[[str, str], None]


@dataclass
class ProbeExplanations:
    """What one evaluation produced, on the model's device.

    Attributes:
        inputs: the probes as the model saw them.
        predicted, confidence: ``(P,)`` arg-max class and its softmax probability, from the shared pass.
        targets: ``(P,)`` the class each probe was explained for.
        results: method name -> :class:`Explanation`, for the methods that succeeded.
        errors: one message per skipped method (failure, NaN/Inf, or no time left in the budget).
        seconds: wall time of the whole evaluation.
    """

    inputs: Tensor
    predicted: Tensor
    confidence: Tensor
    targets: Tensor
    results: dict[str, Explanation] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def explain_probes(
    model: nn.Module,
    images: Tensor,
    labels: Tensor | None,
    explainers: Sequence[Explainer],
    target: TargetSpec = "label",
    *,
    output_transform: Callable[[Any], Tensor] | None = None,
    forward_fn: ModelForwardFn | None = None,
    max_seconds: float | None = None,
    epoch: int = 0,
    warn_once: WarnOnce | None = None,
    quality: Sequence[str] = (),
) -> ProbeExplanations:
    """Run the shared prediction pass and each explainer, in order, on ``images``.

    Each explainer receives the keywords it lists in ``explain_keywords``: ``outputs`` (the prediction pass)
    and, with ``max_seconds``, the time left. An explainer with no time left, or that raises, or whose maps
    are not finite, is skipped with a message in ``errors`` (warned once per method for the budget, every
    time for failures). The training state (grads, RNG, modes, buffers, hooks) is left as found.

    Example::

        >>> from lightning_xai.explain import IntegratedGradients
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> out = explain_probes(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 2]), [IntegratedGradients(4)])
        >>> sorted(out.results), out.errors, out.targets.tolist()
        (['integrated_gradients'], [], [0, 2])
    """
    started = time.perf_counter()
    warn = warn_once or (lambda key, message: rank_zero_warn(message))
    device = getattr(model, "device", None)  # a LightningModule knows it; a plain module: its parameters'
    if not isinstance(device, torch.device):
        device = next(model.parameters(), torch.empty(0)).device
    with training_state_guard(model, device), model_forward(model, output_transform, forward_fn) as forward:
        inputs = images.to(device).clone()
        with torch.no_grad():
            outputs = forward(inputs)  # the prediction pass every method shares
        confidence, predicted = torch.softmax(outputs, dim=1).max(dim=1)
        targets = resolve_targets(target, labels, predicted, warn).to(device)
        done = ProbeExplanations(inputs, predicted, confidence, targets)
        for explainer in explainers:
            offered: dict[str, Any] = {"outputs": outputs.clone()}  # a method may not spoil it for the next
            if max_seconds is not None:
                left = started + max_seconds - time.perf_counter()
                if left <= 0:
                    message = (
                        f"{explainer.name} skipped at epoch {epoch}: `max_seconds_per_epoch={max_seconds:g}` was spent "
                        f"({time.perf_counter() - started:.3f} s) before it could run. Raise the budget, or lower "
                        "`num_probes`/`ig_steps` or evaluate less often (`every_n_epochs`)."
                    )
                    done.errors.append(message)
                    warn(f"budget_{explainer.name}", f"AttributionMonitor: {message}")
                    continue
                offered["max_seconds"] = left
            kwargs = {k: v for k, v in offered.items() if k in explainer.explain_keywords}
            try:
                explanation = explainer.explain(forward, inputs.clone(), targets, **kwargs)
                if not (torch.isfinite(explanation.raw).all() and torch.isfinite(explanation.display).all()):
                    raise FloatingPointError("the attribution contains NaN or Inf")
                if quality:  # opt-in measures of the map, as diagnostics (they never raise)
                    q = quality_diagnostics(explainer, forward, inputs, targets, explanation, quality)
                    explanation.diagnostics.update(q)
                done.results[explainer.name] = explanation
            except Exception as err:  # noqa: BLE001 - an explanation never kills the training run
                if isinstance(err, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()
                message = f"{explainer.name} skipped at epoch {epoch}: {type(err).__name__}: {err}"
                done.errors.append(message)
                rank_zero_warn(f"AttributionMonitor: {message}")
    done.seconds = time.perf_counter() - started
    return done
