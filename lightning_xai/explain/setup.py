"""The setup dry run: before the first training step, run the model once on one probe and set up every
explainer against it, so that a probe, target or method that does not fit the model fails with a named error
then, not after an epoch of training."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.explain.base import Explainer
from lightning_xai.explain.forward import ModelForwardFn, model_forward
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.probes import ProbeSet, TargetSpec, check_target


def dry_run(
    model: nn.Module,
    probes: ProbeSet,
    explainers: Sequence[Explainer],
    target: TargetSpec,
    output_transform: Callable[[Any], Tensor] | None,
    forward_fn: ModelForwardFn | None,
) -> None:
    """Check the probes, the target and every explainer against ``model``; raise ``ValueError`` naming the
    argument, the value and the fix. The training state is left as found."""
    device = getattr(model, "device", None)  # a LightningModule knows it; a plain module: its parameters'
    if not isinstance(device, torch.device):
        device = next(model.parameters(), torch.empty(0)).device
    example = probes.images[:1].to(device)
    with (
        training_state_guard(model, device),
        model_forward(model, output_transform, forward_fn) as forward,
    ):
        try:
            logits = forward(example.clone())
        except Exception as err:
            raise ValueError(
                f"`probes` of shape {tuple(probes.images.shape[1:])} (C, H, W) do not fit "
                f"{type(model).__name__}: its forward raised {type(err).__name__}: {err}. Pass probes "
                "shaped like one validation input, or `output_transform=` if the output is not logits."
            ) from err
        if logits.ndim != 2:
            raise ValueError(
                f"{type(model).__name__}'s forward returns shape {tuple(logits.shape)} for probes; "
                "AttributionMonitor needs (N, num_classes) logits. Pass `output_transform=` to select them."
            )
        num_classes = int(logits.shape[1])
        check_target(target, num_classes=num_classes, num_probes=len(probes))
        if target == "label" and probes.labels is not None:
            bad = probes.labels[(probes.labels < 0) | (probes.labels >= num_classes)]
            if bad.numel():
                raise ValueError(
                    f"`probes` labels {sorted(set(bad.tolist()))[:5]} are outside the model's "
                    f"{num_classes} classes; pass labels in [0, {num_classes - 1}] or `target='predicted'`."
                )
        for explainer in explainers:
            explainer.setup(model, forward, example.clone())
