"""The setup dry run: the prediction pass on every probe and every method on the first two (IG with one step), so
that what does not fit the model fails with a ``ValueError`` (argument, value, fix) before training. A model whose
forward keeps gradients from the probes is reported instead: the methods that need them are skipped for the run."""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.explain.base import Explainer, ForwardFn
from lightning_xai.explain.forward import (
    ModelForwardFn,
    NotLogitsError,
    model_device,
    model_forward,
    not_logits_message,
    shape_fix,
)
from lightning_xai.explain.gradcam import GradCam
from lightning_xai.explain.guard import isolated_rng, training_state_guard
from lightning_xai.explain.integrated_gradients import IntegratedGradients
from lightning_xai.explain.layers import auto_gradcam_layer, is_feature_map, trace_modules
from lightning_xai.explain.run import ProbeExplanations, explanation_problem
from lightning_xai.probes import (
    ProbeSet,
    TargetSpec,
    are_probabilities,
    check_target,
    classes_of,
    output_index,
    predict,
    probabilities_note,
    resolve_targets,
)

Warn = Callable[[str, str], None]
#: the probes the methods run on in the dry run (the prediction pass and the target checks use all of them)
DRY_RUN_PROBES = 2


@dataclass
class DryRunReport:
    """What the dry run found: its cost, the methods that cannot run on this model (name -> reason), whether it ran
    on a copy (lazy modules: it runs again on the model once training initialised them) and the drift keys (and the
    detector's scores) an evaluation logs once it has something to compare with."""

    seconds: float = 0.0
    disabled: dict[str, str] = field(default_factory=dict)
    on_copy: bool = False
    drift_keys: tuple[str, ...] = ()


def dry_run(
    model: nn.Module,
    probes: ProbeSet,
    explainers: Sequence[Explainer],
    target: TargetSpec,
    forward_fn: ModelForwardFn | None,
    *,
    warn: Warn | None = None,
    before_training: bool = False,
) -> tuple[DryRunReport, ProbeExplanations]:
    """The explanation stage of one evaluation on ``probes`` at minimum cost; the report and the first
    :data:`DRY_RUN_PROBES` probes' explanations (for the later stages' checks). The model is left as found, values
    included, so what its first forward does happens again in its first training step; a model with lazy modules is
    checked on a copy (their weights would be drawn here). ``before_training``: said when the model cannot run yet.
    """
    started = time.perf_counter()
    report = DryRunReport(on_copy=any(nn.parameter.is_lazy(t) for t in [*model.parameters(), *model.buffers()]))
    device = model_device(model)
    inputs = probes.images.to(device)
    if report.on_copy:  # initialise the copy's lazy modules (the model's own are drawn in its first training step)
        try:
            model = copy.deepcopy(model)
        except Exception as err:
            raise ValueError(
                f"{type(model).__name__} has lazily initialised modules, so the setup check runs on a copy (its "
                f"weights would otherwise be drawn here), but it cannot be copied: {type(err).__name__}: {err}. "
                "Initialise the lazy modules first (one forward on a dummy batch in `__init__`/`setup()`) or make "
                "the model deep-copyable."
            ) from err
        with isolated_rng(device), model_forward(model.eval(), forward_fn) as forward:
            _prediction_pass(model, forward, inputs[:1], before_training, probes.drawn, forward_fn is not None)
    guard = training_state_guard(model, device, restore_values=not report.on_copy)
    with guard, model_forward(model, forward_fn) as forward:
        logits = _prediction_pass(model, forward, inputs, before_training, probes.drawn, forward_fn is not None)
        if warn is not None:
            _check_batch_independent(model, forward, inputs[:2], warn)
        num_classes = classes_of(int(logits.shape[1]))  # one logit: a binary classifier's classes 0 and 1
        check_target(target, num_classes=num_classes, num_probes=len(probes))
        if target == "label" and probes.labels is not None:
            bad = probes.labels[(probes.labels < 0) | (probes.labels >= num_classes)]
            if bad.numel():
                shown = sorted(set(bad.tolist()))[:5]
                if logits.shape[1] == 1:
                    raise ValueError(
                        f"`probes` labels {shown} are not 0 or 1, but {type(model).__name__} returns one logit (a "
                        "binary classifier: class 1 where sigmoid(logit) > 0.5); pass 0/1 labels, or "
                        "`target='predicted'`, or `forward_fn=` returning one logit per class."
                    )
                raise ValueError(
                    f"`probes` labels {shown} are outside the model's "
                    f"{num_classes} classes; pass labels in [0, {num_classes - 1}] or `target='predicted'`."
                )
        for explainer in explainers:
            try:
                explainer.setup(model, forward, inputs[:1].clone())
            except ValueError:
                if isinstance(explainer, GradCam) and explainer.layer is None:
                    _refuse_reused_feature_maps(model, forward, inputs[:1])
                raise
        confidence, predicted = predict(logits)
        if warn is not None and are_probabilities(logits):  # said before training (the evaluations say it too)
            warn("outputs_are_probabilities", probabilities_note(type(model).__name__))
        targets = resolve_targets(target, probes.labels, predicted, lambda key, message: None).to(device)
        k = DRY_RUN_PROBES  # the methods run on the first probes only: every check needs no more
        done = ProbeExplanations(inputs[:k], predicted[:k], confidence[:k], output_index(targets[:k], logits))
        for explainer in explainers:
            _try_method(model, explainer, forward, done, logits[:k], report, warn)
        done.targets = targets[:k]  # the classes (the methods attribute the output column)
    report.seconds = time.perf_counter() - started
    return report, done


def _check_batch_independent(model: nn.Module, forward: ForwardFn, inputs: Tensor, warn: Warn) -> None:
    """Say when a probe's output depends on the other images of its batch in eval mode (BatchNorm without running
    statistics, statistics over the batch in ``forward``): each probe's map then mixes in the other probes, and
    Integrated Gradients' passes mix points of different probes' paths. The test is exact, on two probes (any batch
    couples them): the gradient of the first probe's logits with respect to the second is zero unless the batch
    couples them."""
    if inputs.shape[0] < 2:
        return
    try:
        with torch.enable_grad():
            x = inputs.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(forward(x)[0].float().sum(), x)
    except Exception:  # noqa: BLE001 - a model the gradient methods cannot run on is said by their own checks
        return
    own, others = float(grad[0].abs().max()), float(grad[1:].abs().max())
    if others > 1e-6 * max(own, 1e-12):
        warn(
            "batch_dependent",
            f"AttributionMonitor: {type(model).__name__}'s output for a probe depends on the other images of its "
            "batch in eval mode (the gradient of one probe's logits reaches the other probes), e.g. BatchNorm with "
            "`track_running_stats=False` or statistics over the batch in `forward`. Each probe's explanation then "
            "mixes in the other probes, and Integrated Gradients' passes mix points of different probes (its "
            "completeness gap shows it). Keep running statistics for eval mode.",
        )


def _prediction_pass(
    model: nn.Module, forward: ForwardFn, inputs: Tensor, before_training: bool, drawn: bool, custom: bool
) -> Tensor:
    """The model's outputs on the probes (``custom``: through the user's ``forward_fn``), refused where they are not
    (N, num_classes) logits or the forward raised, naming what to change."""
    try:
        with torch.no_grad():
            logits = forward(inputs.clone())
    except NotLogitsError as err:  # the monitor's own check of the output: not a reason to doubt the probes
        raise ValueError(not_logits_message(type(model).__name__, err, custom)) from err
    except Exception as err:
        name, shape = type(model).__name__, tuple(inputs.shape[1:])
        cause = f"{'`forward_fn`' if custom else 'its forward'} raised {type(err).__name__}: {err}"
        if not custom and _needs_arguments(model, err):  # forward(x, extra) called as forward(x)
            raise ValueError(
                f"{name}.forward takes more than the images {inspect.signature(model.forward)}, and the monitor calls "
                f"`{name}(x)`: {cause}. Pass `forward_fn=` to call it with the rest, e.g. "
                "`AttributionMonitor(..., forward_fn=lambda model, x: model(x, ...))` (a module-level function or "
                f"`functools.partial` for `strategy='ddp_spawn'`).{_per_example_inputs(model)}"
            ) from err
        if before_training and drawn:  # the probes are what validation gives the model: the model cannot run yet
            raise ValueError(
                f"{name} cannot run on the probes in eval mode before its first training step: {cause}. If {name} "
                "needs a training step first (e.g. statistics set by its first training batch), initialise that "
                "state in `setup()` or `on_fit_start()`; or pass `forward_fn=` if its output is not logits."
            ) from err
        later = f" (or {name} cannot run in eval mode before its first training step)" if before_training else ""
        last = inputs.ndim == 4 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4)
        hint = " They look channels-last (H, W, C): make them (C, H, W) (`x.permute(0, 3, 1, 2)`)." if last else ""
        raise ValueError(
            f"`probes` of shape {shape} (C, H, W) do not fit {name}{later}: {cause}.{hint} Pass probes shaped like one "
            "validation input, or `forward_fn=` if the output is not logits."
        ) from err
    if logits.ndim != 2 or logits.shape[0] != inputs.shape[0]:
        who = "`forward_fn`" if custom else f"{type(model).__name__}'s forward"
        raise ValueError(
            f"{who} returns shape {tuple(logits.shape)} for {inputs.shape[0]} probes; AttributionMonitor needs "
            f"(N, num_classes) logits. {shape_fix(tuple(logits.shape), len(inputs), custom)}."
        )
    return logits


def _per_example_inputs(model: nn.Module) -> str:
    """For a forward with two required inputs (``forward(x1, x2)``, the second a tensor or not annotated): how to
    explain it when the second is a tensor of each example (a second image), which a ``forward_fn`` cannot get from the
    probes; else ``""``."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return ""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is inspect.Parameter.empty]
    if len(required) < 2 or required[1].annotation not in (inspect.Parameter.empty, Tensor, "Tensor", "torch.Tensor"):
        return ""  # not annotated as a tensor (``scale: float``): the extra-arguments fix covers it
    a, b = (p.name for p in required[:2])
    return (
        f" If `{b}` is a tensor of each example (a second image, batches `({a}, {b}, y)`), `forward_fn` cannot get it: "
        f"the probes hold `{a}` alone. Give the probes both as channels and split them: "
        f"`probes=(torch.cat([{a}, {b}], dim=1), labels)` and `forward_fn=lambda model, x: model(x[:, :C], x[:, C:])` "
        f"with C the channels of `{a}` (and `denormalize=lambda x: x[:, :C]` to show `{a}`)."
    )


def _needs_arguments(model: nn.Module, err: Exception) -> bool:
    """``err`` is the ``TypeError`` of calling ``model.forward`` with the images alone (it needs more arguments)."""
    if not isinstance(err, TypeError) or "argument" not in str(err):
        return False
    try:
        inspect.signature(model.forward).bind(object())
    except TypeError:
        return True
    except ValueError:  # no signature to read
        return False
    return False


def _refuse_reused_feature_maps(model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
    """Grad-CAM found no layer: say so precisely when the only feature maps come from modules that run twice."""
    traces = trace_modules(model, forward, example.clone())
    reused = [t for t in traces if is_feature_map(t.output_shape) and t.calls > 1]
    if auto_gradcam_layer(traces, model, (int(example.shape[-2]), int(example.shape[-1]))) is None and reused:
        runs = ", ".join(f"`{t.name}` ({t.module_type}) runs {t.calls} times" for t in reused[-4:])
        raise ValueError(
            f"`methods` includes 'gradcam' but the only modules of {type(model).__name__} that return a 4-D feature "
            f"map run more than once per forward pass: {runs}. Captum's hooks keep only a module's last call, so "
            "Grad-CAM on it would be wrong. Give each use its own module (e.g. `self.conv2 = nn.Conv2d(...)` instead "
            "of calling `self.conv` twice), pass `GradCam(layer=...)` naming a module that runs once, or use "
            "`methods=('integrated_gradients',)`."
        ) from None


def _try_method(
    model: nn.Module,
    explainer: Explainer,
    forward: ForwardFn,
    done: ProbeExplanations,
    logits: Tensor,
    report: DryRunReport,
    warn: Warn | None,
) -> None:
    """One method on ``done``'s probes at minimum cost (IG with one step), its finite result into ``done.results``;
    a model whose gradient does not reach the probes is recorded in ``report.disabled`` and warned."""
    inputs = done.inputs
    runner: Explainer = explainer
    if isinstance(explainer, IntegratedGradients):
        runner = IntegratedGradients(1, explainer.baseline, explainer.internal_batch_size)
        runner.setup(model, forward, inputs[:1].clone())
    kwargs = {"outputs": logits.clone()} if "outputs" in runner.explain_keywords else {}
    try:
        result = runner.explain(forward, inputs.clone(), done.targets, **kwargs)
    except Exception as err:
        cause = gradient_problem(forward, inputs[:1])
        if not cause:
            raise ValueError(
                f"`methods`: {explainer.name} failed on the probes at setup: {type(err).__name__}: {err}. Fix "
                "the configuration (layer, baseline, probes) or the explainer, or remove it from `methods`."
            ) from err
        report.disabled[explainer.name] = f"it cannot run on this model: {cause} (see the warning at setup)"
        if warn is not None:
            warn(f"gradient_{cause[:40]}", gradient_message(model, cause))
        return
    if problem := explanation_problem(result, inputs):
        raise ValueError(
            f"`methods`: {explainer.name} ({type(explainer).__name__}) returned a malformed Explanation at setup: "
            f"{problem}. Fix its explain(), or remove it from `methods`."
        )
    if bool(torch.isfinite(result.raw).all() and torch.isfinite(result.display).all()):
        done.results[explainer.name] = result


NO_GRAD = "its forward does not carry gradients from the logits back to the input"
REENTRANT = "it uses reentrant gradient checkpointing"


def gradient_problem(forward: ForwardFn, example: Tensor) -> str:
    """Why gradients cannot flow from the logits back to the input (a forward that cuts the graph, or reentrant
    checkpointing, which ``torch.autograd.grad`` does not support), or ``""``."""
    x = example.clone().requires_grad_(True)
    try:
        out = forward(x)
    except Exception:  # noqa: BLE001 - a forward that fails is not a gradient problem
        return ""
    if not out.requires_grad:
        return NO_GRAD
    seen: set[Any] = set()
    stack = [out.grad_fn]
    while stack and len(seen) < 100_000:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "CheckpointFunctionBackward":
            return REENTRANT
        stack.extend(parent for parent, _ in node.next_functions)
    return ""


def gradient_message(model: nn.Module, cause: str) -> str:
    """The setup warning for a model gradient methods cannot explain: why, and what to do."""
    if cause == REENTRANT:
        why = (
            "it uses reentrant gradient checkpointing (`torch.utils.checkpoint.checkpoint(..., use_reentrant=True)`), "
            "which does not support `torch.autograd.grad`, what Captum differentiates with"
        )
        fix = "pass `use_reentrant=False` to `checkpoint` (what PyTorch recommends; training is the same)"
    else:
        why = (
            "its forward does not carry gradients from the logits back to the input: part of it runs under "
            "`torch.no_grad()`/`torch.inference_mode()` or `.detach()`es its activations (e.g. a frozen backbone)"
        )
        fix = (
            "freeze that part with `backbone.requires_grad_(False)` instead of `torch.no_grad()` (training costs the "
            "same: autograd records nothing where neither the inputs nor the weights need gradients), or pass "
            "`forward_fn=` that runs the model with gradients"
        )
    return (
        f"AttributionMonitor: {type(model).__name__} cannot be explained by gradient methods: {why}. The methods "
        f"that need it are skipped for this fit (training is not affected). To explain it, {fix}."
    )
