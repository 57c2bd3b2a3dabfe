"""Grad-CAM's automatic layer, checked against the model: a candidate from :func:`ordered_candidates` is taken only
if it passes the *cut test*, i.e. every path from the input to the logits passes through it. With the candidate's
output replaced by its ``.detach()``, the gradient of the target logit with respect to the input must (nearly)
vanish. A layer on one branch of a two-path block (RegNet's ``f.a``, ShuffleNet's ``branch2``) leaves the other
path's gradient; a layer the logits do not use at all (an auxiliary decoder) leaves all of it. Grad-CAM on either
would miss the evidence that flows past it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_xai.explain.base import ForwardFn
from lightning_xai.explain.forward import model_device
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.layers import (
    LayerTrace,
    auto_gradcam_layer,
    map_size,
    ordered_candidates,
    transformer_gradcam_layer,
)

#: a candidate passes the cut test when detaching its output leaves less than this share of the input gradient's L1
#: mass. An exact cut leaves exactly 0 (the only path is severed, nothing is approximated); the margin accepts a side
#: path that carries a negligible share (a near-zero-initialised skip), where Grad-CAM still sees 99 % of the evidence
CUT_SHARE = 0.01
#: at most this many candidates are put to the test (one forward and backward pass on one probe each)
MAX_CUT_TESTS = 64
#: when no candidate is a cut, the one leaving the least is taken (with a warning) if that is under this share: most of
#: the evidence still flows through it (a small side path around the whole network, e.g. a global-average shortcut
#: to the logits); a model where every candidate leaves more gets the refusal
FALLBACK_SHARE = 0.5


@dataclass(frozen=True)
class LayerChoice:
    """What :func:`choose_gradcam_layer` decided.

    Attributes:
        name: the chosen layer, or None when no candidate passed (``shares`` says why) or none exists.
        shares: each tested candidate -> share of the input gradient left with its output detached, in test order.
        tested: False when the cut test could not run (no gradient reaches the input, reentrant checkpointing): the
            shape-based choice (the setup check then reports why gradient methods cannot run).
        seconds: what the choice cost (tracing excluded).
        bypassed: the share of the input gradient that flows around the chosen layer when no candidate was a cut
            (the least any left, under :data:`FALLBACK_SHARE`); 0.0 for a cut.
    """

    name: str | None
    shares: dict[str, float] = field(default_factory=dict)
    tested: bool = True
    seconds: float = 0.0
    bypassed: float = 0.0


def choose_gradcam_layer(
    model: nn.Module, forward: ForwardFn, example: Tensor, traces: list[LayerTrace]
) -> LayerChoice:
    """Grad-CAM's automatic layer for ``model``: a known ViT's :func:`transformer_gradcam_layer` (its last block's
    first LayerNorm is a branch by design: the patch tokens' gradient flows there), else the first candidate of
    :func:`ordered_candidates` (last to first, :data:`MIN_CELLS` cells a side preferred) that passes the cut test on
    ``example`` for its predicted class. Runs inside :func:`training_state_guard`: no ``.grad``, mode, buffer, hook or
    RNG stream of the training run is touched (only ``torch.autograd.grad`` with respect to a copy of the input)."""
    started = time.perf_counter()
    vit_layer = transformer_gradcam_layer(model)
    if vit_layer is not None and auto_gradcam_layer(traces, model) == vit_layer:
        return LayerChoice(vit_layer, tested=False)
    ordered = ordered_candidates(traces, (int(example.shape[-2]), int(example.shape[-1])))
    if not ordered:
        return LayerChoice(None, tested=False)
    named, shares = dict(model.named_modules()), dict[str, float]()
    with training_state_guard(model, model_device(model)):
        try:
            full, targets = gradient_mass(forward, example)
        except Exception:  # noqa: BLE001 - e.g. reentrant checkpointing: the setup check reports it on its own
            full, targets = 0.0, example.new_zeros(0)
        if not full > 0:  # no gradient reaches the input (no_grad, reentrant checkpointing, dead): cannot tell
            return LayerChoice(ordered[0], tested=False, seconds=time.perf_counter() - started)
        failed: list[str] = []
        for name in ordered:
            if len(shares) >= MAX_CUT_TESTS:
                break
            if any(name.startswith(f"{outer}.") for outer in failed):  # inside a block bypassed: bypassed too
                continue
            try:
                left, _ = gradient_mass(forward, example, targets, named[name])
            except Exception:  # noqa: BLE001 - a forward that cannot run with this output detached fails the test
                left = float("nan")
            shares[name] = left / full
            if shares[name] < CUT_SHARE:
                _say_if_shallow(name, failed, shares, traces)
                return LayerChoice(name, shares, seconds=time.perf_counter() - started)
            failed.append(name)
    seconds = time.perf_counter() - started
    finite = {name: share for name, share in shares.items() if share == share}  # not NaN
    best = min(finite, key=finite.__getitem__, default=None)
    if best is None or finite[best] >= FALLBACK_SHARE:
        return LayerChoice(None, shares, seconds=seconds)
    rank_zero_warn(
        f"AttributionMonitor: the automatic layer `{best}` is the closest to a cut this model has: {finite[best]:.1%} "
        "of the input gradient flows around it (a path around every candidate, e.g. a global shortcut to the "
        "logits), so maps on it miss that part of the evidence (every other candidate misses more). "
        "Integrated Gradients (on the input) sees all of it; `layer=...` chooses the layer yourself and silences this."
    )
    return LayerChoice(best, shares, seconds=seconds, bypassed=finite[best])


def _say_if_shallow(name: str, failed: list[str], shares: dict[str, float], traces: list[LayerTrace]) -> None:
    """Warn when the cut ``name`` has a finer map than candidates that failed the test: the model's deeper feature
    layers are each bypassed (its blocks are not modules, e.g. fx-traced with the residual additions inlined), so
    Grad-CAM falls back to an early layer, whose maps stay close to the input gradient."""
    cells = {t.name: map_size(t.output_shape) for t in traces}
    deeper = [
        n for n in failed if cells[n][0] * cells[n][1] < cells[name][0] * cells[name][1] and shares[n] == shares[n]
    ]
    if not deeper:
        return
    deepest = min(deeper, key=lambda n: cells[n][0] * cells[n][1])
    (h, w), (dh, dw) = cells[name], cells[deepest]
    rank_zero_warn(
        f"AttributionMonitor: Grad-CAM's automatic layer is `{name}` ({h}x{w} cells), early in the model: every deeper "
        f"feature layer tested lets part of the evidence flow around it (`{deepest}`, {dh}x{dw}: {shares[deepest]:.0%} "
        "of the input gradient), e.g. a traced model whose blocks' additions are not modules. Maps this early show "
        "the input's edges more than what the class is read from; wrap each block in a module to give Grad-CAM a "
        "deeper layer, or rely on Integrated Gradients. `layer=...` chooses the layer yourself and silences this."
    )


def gradient_mass(
    forward: ForwardFn, example: Tensor, targets: Tensor | None = None, detach: nn.Module | None = None
) -> tuple[float, Tensor]:
    """L1 mass of the gradient of ``forward(example)[i, targets[i]]`` (summed over ``i``; default: the predicted
    classes) with respect to ``example``, with ``detach``'s output replaced by its detached copy; and the targets."""
    x = example.detach().clone().requires_grad_(True)
    handle = None if detach is None else detach.register_forward_hook(_detached)
    try:
        logits = forward(x)
    finally:
        if handle is not None:
            handle.remove()
    targets = logits.detach().argmax(dim=1) if targets is None else targets
    score = logits.gather(1, targets.view(-1, 1)).sum()
    if not score.requires_grad:
        return 0.0, targets
    (grad,) = torch.autograd.grad(score, x, allow_unused=True)
    return (0.0 if grad is None else float(grad.detach().abs().sum())), targets


def logits_reach(model: nn.Module, forward: ForwardFn, module: nn.Module, example: Tensor) -> bool | None:
    """Whether the logits' gradient reaches ``module``'s output on ``example``: True, False (the logits do not use
    it, e.g. an auxiliary decoder), or None when no gradient reaches the input either (a forward under ``no_grad``:
    the setup check reports that case on its own)."""
    probe: list[Tensor] = []

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if not isinstance(output, Tensor) or not output.is_floating_point():
            return output
        probe.append(torch.zeros_like(output, requires_grad=True))
        return output + probe[-1]  # the same values; the gradient with respect to probe is the output's

    with training_state_guard(model, model_device(model)):
        x = example.detach().clone().requires_grad_(True)
        handle = module.register_forward_hook(hook)
        try:
            logits = forward(x)
        finally:
            handle.remove()
        score = logits.gather(1, logits.detach().argmax(dim=1).view(-1, 1)).sum()
        if not probe or not score.requires_grad:
            return None
        try:
            grads = torch.autograd.grad(score, [x, *probe], allow_unused=True)
        except RuntimeError:  # reentrant checkpointing: the setup check reports it on its own
            return None
    if all(g is None for g in grads[1:]):
        return None if grads[0] is None else False
    return True


def _detached(_module: nn.Module, _args: Any, output: Any) -> Any:
    """Forward hook: the module's output cut from the graph (a copy, so in-place ops after it change nothing)."""
    return output.detach().clone() if isinstance(output, Tensor) else output
