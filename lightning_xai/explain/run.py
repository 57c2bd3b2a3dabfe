"""One evaluation's explanations: the shared prediction pass and every method on the probes, under the
training-state guard, in float32, within an optional time budget. Nothing here raises: a failure skips the
evaluation or the method and is reported (a warning and ``errors``). The benchmarks time exactly this."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor, nn

from lightning_xai import _warn
from lightning_xai._rng import seeded_calls
from lightning_xai.explain import Explainer, Explanation
from lightning_xai.explain.forward import ModelForwardFn, model_device, model_forward, synchronize
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.quality import quality_diagnostics
from lightning_xai.explain.threads import ThreadChoice, torch_threads
from lightning_xai.probes.targets import (
    TargetSpec,
    are_probabilities,
    one_column_in_unit_range,
    one_column_note,
    output_index,
    predict,
    probabilities_note,
    resolve_targets,
)

WarnOnce = Callable[[str, str], None]
T = TypeVar("T")


@dataclass
class ProbeExplanations:
    """What one evaluation produced, on the model's device: the probes as the model saw them, the ``(P,)`` arg-max
    class, its probability and the class explained (all three empty when the prediction pass failed), each method's
    :class:`Explanation` and seconds, one message per failure, the whole evaluation's seconds, and every warning said
    while explaining, ``(key, message)`` (under DDP another rank's are silent: rank 0 says them, :func:`say_notes`)."""

    inputs: Tensor
    predicted: Tensor
    confidence: Tensor
    targets: Tensor
    results: dict[str, Explanation] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    method_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)


def explain_probes(
    model: nn.Module,
    images: Tensor,
    labels: Tensor | None,
    explainers: Sequence[Explainer],
    target: TargetSpec = "label",
    *,
    forward_fn: ModelForwardFn | None = None,
    max_seconds: float | None = None,
    limits: Mapping[str, Mapping[str, Any]] | None = None,
    epoch: int = 0,
    warn_once: WarnOnce | None = None,
    skip: dict[str, str] | None = None,
    quality: Sequence[str] = (),
    threads: ThreadChoice | None = None,
    first: int = 0,
) -> ProbeExplanations:
    """Run the shared prediction pass and each explainer, in order, on ``images``, leaving the training state as found.

    Each explainer gets the keywords it lists in ``explain_keywords``: ``outputs`` (the prediction pass) and, with
    ``max_seconds``, the time left. One with no time left, named in ``skip`` (name -> reason), that raises or whose
    output is malformed or not finite is skipped with a message in ``errors`` (each distinct failure warned once by
    ``warn_once(key, message)``). ``quality`` measures are added to each explanation's diagnostics. ``threads`` picks
    the methods' torch thread count on the CPU and is told their rate (:mod:`~lightning_xai.explain.threads`).
    ``first``: the position of ``images[0]`` among the probes (a rank's share under DDP), for messages."""
    started = time.perf_counter()
    said = reporting(warn_once)
    device = model_device(model)
    empty, count, loop_began, cpu_began = torch.empty(0, dtype=torch.long), None, 0.0, 0.0
    done = ProbeExplanations(images, empty, empty.float(), empty)

    def warn(key: str, message: str) -> None:  # said here, and noted for rank 0 (another rank's warnings are silent)
        done.notes.append((key, message))
        said(key, message)

    try:  # the guard or the forward wrapper could fail too (e.g. out of memory for float32 weight copies)
        with training_state_guard(model, device), model_forward(model, forward_fn) as unseeded:
            forward = seeded_calls(unseeded, device)  # a model's own randomness: the same numbers at every evaluation
            done.inputs = inputs = images.to(device).clone()
            count = threads.best(device) if threads else None  # one thread while the cores are contended
            try:  # the shared prediction pass
                with torch.no_grad(), torch_threads(count):
                    outputs = forward(done.inputs)
                if not torch.isfinite(outputs).all():  # a diverged model: its predictions and maps mean nothing
                    raise FloatingPointError(not_finite(type(model).__name__, outputs, first))
                done.confidence, done.predicted = predict(outputs)  # one logit: sigmoid > 0.5
                if are_probabilities(outputs):  # a forward that ends in softmax: its outputs are the probabilities
                    warn("outputs_are_probabilities", probabilities_note(type(model).__name__))
                if one_column_in_unit_range(outputs):  # a logit, or a probability (a forward that ends in sigmoid)?
                    warn("one_column_in_unit_range", one_column_note(type(model).__name__))
                done.targets = resolve_targets(target, labels, done.predicted, warn).to(inputs.device)
            except Exception as err:  # noqa: BLE001 - an explanation never kills the training run
                _report(done, f"the prediction pass failed at epoch {epoch}, so every method is skipped", err, warn)
                explainers = ()
            loop_began, cpu_began = time.perf_counter(), time.process_time()
            for explainer in explainers:
                name, offered = explainer.name, {"outputs": outputs.clone(), **(limits or {}).get(explainer.name, {})}
                if max_seconds is not None:  # the time left
                    offered["max_seconds"] = started + max_seconds - time.perf_counter()
                reason = (skip or {}).get(name)
                if reason is None and offered.get("max_seconds", 1.0) <= 0:
                    reason = (
                        f"`Budget(max_seconds_per_epoch={max_seconds:g})` was spent "
                        f"({time.perf_counter() - started:.3f} s) before it could run. Raise the budget, or lower "
                        "`num_probes`/IG's `n_steps` or evaluate less often (`every_n_epochs`)."
                    )
                    warn(f"budget_{name}", f"AttributionMonitor: {name} skipped at epoch {epoch}: {reason}")
                if reason is not None:
                    done.errors.append(f"{name} skipped at epoch {epoch}: {reason}")
                    continue
                began = time.perf_counter()
                try:  # one method: its result in ``done.results``, or its failure in ``done.errors``
                    kwargs = {k: v for k, v in offered.items() if k in explainer.explain_keywords}
                    with torch_threads(count):
                        explained = output_index(done.targets, outputs)  # one logit: that logit
                        explanation = explainer.explain(forward, inputs.clone(), explained, **kwargs)
                    if problem := explanation_problem(explanation, inputs):
                        raise ValueError(f"malformed Explanation: {problem}")
                    if not (torch.isfinite(explanation.raw).all() and torch.isfinite(explanation.display).all()):
                        raise FloatingPointError("the attribution contains NaN or Inf")
                    if quality:  # opt-in measures of the map, as diagnostics (they never raise)
                        q = quality_diagnostics(explainer, forward, inputs, done.targets, explanation, quality)
                        explanation.diagnostics.update(q)
                    synchronize(device)  # the method's kernels are done before its time is taken
                    done.results[name], done.method_seconds[name] = explanation, time.perf_counter() - began
                except Exception as err:  # noqa: BLE001 - an explanation never kills the training run
                    _report(done, f"{name} skipped at epoch {epoch}", err, warn, name)
    except Exception as err:  # noqa: BLE001 - an explanation never kills the training run
        _report(done, f"the evaluation failed at epoch {epoch}", err, warn)
    if threads is not None and done.results:  # the methods' rate with the count they ran with
        cost = {e.name: torch.tensor(float(getattr(e, "passes_per_probe", 1.0))) for e in explainers}
        used = [x.diagnostics.get("passes_per_probe", cost[n]) for n, x in done.results.items()]  # IG: the steps it ran
        passes = sum(float(p.double().mean()) for p in used)
        seconds = (time.perf_counter() - loop_began, time.process_time() - cpu_began)
        threads.record(count, len(images) * passes, *seconds, methods=tuple(done.results))
    done.seconds = time.perf_counter() - started
    return done


def not_finite(model: str, outputs: Tensor, first: int = 0) -> str:
    """Why the prediction pass stops when ``model``'s ``outputs`` hold NaN or Inf: on which probes, and the causes."""
    bad = (~torch.isfinite(outputs)).flatten(1).any(dim=1).nonzero().flatten().tolist()
    shown = ", ".join(f"#{first + i}" for i in bad[:8]) + (", ..." if len(bad) > 8 else "")
    return (
        f"{model}'s outputs are NaN or Inf on {len(bad)} of {len(outputs)} probes ({shown}): its predictions and "
        "maps would mean nothing. The model has diverged (a NaN loss; lower the learning rate, clip gradients) or "
        "its outputs overflow their dtype (float16 logits above 65504)."
    )


def _report(done: ProbeExplanations, what: str, err: BaseException, warn: WarnOnce, name: str = "") -> None:
    """Record a failure in ``done.errors`` and warn once per distinct failure (free the CUDA cache after an OOM)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
    reason = f"{type(err).__name__}: {err}"
    done.errors.append(f"{what}: {reason}")
    warn(f"failed_{name}_{reason}", f"AttributionMonitor: {what}: {reason}")


def explanation_problem(explanation: Any, inputs: Tensor) -> str:
    """What is wrong with an explainer's output for ``P`` probes of H x W, or ``""``: it must be an
    :class:`Explanation` of ``(P, h, w)`` float ``raw``, ``(P, H, W)`` float ``display`` maps, ``(P,)`` diagnostics."""
    num, size = int(inputs.shape[0]), tuple(inputs.shape[-2:])
    if not isinstance(explanation, Explanation):
        return f"explain() returned {type(explanation).__name__}, not an Explanation"
    raw, display = explanation.raw, explanation.display
    if not isinstance(raw, Tensor) or raw.ndim != 3 or raw.shape[0] != num or not raw.is_floating_point():
        shown = tuple(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__
        return f"raw has shape {shown}; expected (P, h, w) = ({num}, h, w) float maps"
    if 0 in raw.shape:
        return f"raw has an empty dimension: {tuple(raw.shape)}"
    if not isinstance(display, Tensor) or tuple(display.shape) != (num, *size) or not display.is_floating_point():
        shown = tuple(display.shape) if isinstance(display, Tensor) else type(display).__name__
        return f"display has shape {shown}; expected (P, H, W) = {(num, *size)} float maps at the input's resolution"
    if not isinstance(explanation.diagnostics, dict):
        return f"diagnostics is a {type(explanation.diagnostics).__name__}, not a dict of (P,) tensors"
    for key, value in explanation.diagnostics.items():
        if not isinstance(key, str) or not isinstance(value, Tensor) or value.numel() != num:
            what = f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            return f"diagnostics[{key!r}] is {what}; expected a tensor of {num} values (one per probe)"
    return ""


def reporting(warn_once: WarnOnce | None) -> WarnOnce:
    """``warn_once`` (or a plain warning) that never raises (:func:`lightning_xai._warn.report`)."""

    def report(key: str, message: str) -> None:
        _warn.report(message, None if warn_once is None else lambda text: warn_once(key, text))

    return report


def isolated(what: str, errors: list[str], warn: WarnOnce, fn: Callable[..., T], *args: Any) -> T | None:
    """``fn(*args)``, or None after a failure, added to ``errors`` and warned once (``what`` names the step)."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - what the monitor runs never kills the training run
        reason = f"{type(err).__name__}: {err}"
        errors.append(f"{what} failed: {reason}")
        reporting(warn)(f"failed_{what}_{reason}", f"AttributionMonitor: {what} failed, so it is skipped: {reason}")
        return None


def merge_shards(parts: Sequence[ProbeExplanations], device: torch.device) -> ProbeExplanations:
    """One evaluation from the ranks' consecutive shards of the probes: a method is kept when every shard has it;
    ``seconds`` (and each method's) is the slowest shard's."""

    def cat(tensors: Sequence[Tensor]) -> Tensor:
        return torch.cat([t.to(device) for t in tensors])

    predicted = all(p.predicted.numel() == p.inputs.shape[0] for p in parts)  # a failed prediction pass: none
    heads = [[getattr(p, key) for p in parts] for key in ("predicted", "confidence", "targets")]
    classes, confidence, targets = (cat(head) if predicted else head[0][:0] for head in heads)
    seconds = max((p.seconds for p in parts), default=0.0)
    merged = ProbeExplanations(cat([p.inputs for p in parts]), classes, confidence, targets, seconds=seconds)
    for part in parts:
        merged.errors += [e for e in part.errors if e not in merged.errors]
    names = list(dict.fromkeys(name for part in parts for name in part.results))
    for name in names:
        if not all(name in part.results for part in parts):
            merged.errors.append(f"{name} skipped: it failed on another rank (that rank's error is listed too)")
            continue
        results = [part.results[name] for part in parts]
        keys = [k for k in results[0].diagnostics if all(k in r.diagnostics for r in results)]
        merged.results[name] = Explanation(
            raw=cat([r.raw for r in results]),
            display=cat([r.display for r in results]),
            diagnostics={k: cat([r.diagnostics[k] for r in results]) for k in keys},
        )
        merged.method_seconds[name] = max(part.method_seconds.get(name, 0.0) for part in parts)
    return merged


def say_notes(parts: Sequence[ProbeExplanations | None], rank: int, warn_once: WarnOnce) -> None:
    """Say on ``rank`` (rank 0) the warnings the other ranks' ``parts`` noted, each once by its key, naming the rank
    (warnings are silent on ranks other than 0)."""
    head = "AttributionMonitor: "
    for other, part in enumerate(parts):
        for key, message in part.notes if part is not None and other != rank else ():
            text = message[len(head) :] if message.startswith(head) else message
            warn_once(key, f"AttributionMonitor (on rank {other}): {text}")


def to_cpu(done: ProbeExplanations) -> ProbeExplanations:
    """A copy on the CPU (to travel between ranks)."""
    return apply_to_collection(done, Tensor, Tensor.cpu)
