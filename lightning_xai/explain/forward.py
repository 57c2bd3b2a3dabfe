"""The forward function attributions are computed with: float32, uncompiled, logits only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.explain.base import ForwardFn

#: ``forward_fn(module, x)``: how to call the model on a batch of probes (extra arguments, another method, ...)
ModelForwardFn = Callable[[Any, Tensor], Any]


class _Call(nn.Module):
    """Wraps ``forward_fn(module, x)`` as a module so ``torch.func.functional_call`` can swap ``module``'s weights."""

    def __init__(self, module: nn.Module, forward_fn: ModelForwardFn) -> None:
        super().__init__()
        self.module = module
        self.forward_fn = forward_fn

    def forward(self, x: Tensor) -> Any:
        return self.forward_fn(self.module, x)


class NotLogitsError(TypeError):
    """The model's forward returned something other than a logits tensor (a tuple, a dict, ...) and no
    ``forward_fn=`` picks the logits out of it.

    Attributes:
        description: what the output was, e.g. ``"a tuple of 2: (Tensor (6, 10), Tensor (6, 16))"``.
        body: the expression that picks the logits from the output, e.g. ``"module(x)[0]"``.
        fix: the ``forward_fn=`` that picks the logits, e.g. ``"forward_fn=lambda module, x: module(x)[0]"``.
    """

    def __init__(self, output: Any, batch: int) -> None:
        self.description, self.body = describe_output(output, batch)
        self.fix = f"forward_fn=lambda module, x: {self.body}"
        super().__init__(
            f"the model returned {self.description}, not a logits tensor; pass `forward_fn=` to pick the "
            f"(N, num_classes) logits, e.g. `{self.fix}`."
        )


def describe_output(output: Any, batch: int) -> tuple[str, str]:
    """What a forward returned, in words, and the expression that picks its logits from ``module(x)``
    (``"module(x)[0]"``, ``"module(x)['logits']"``): the first ``(batch, K)`` tensor in it, else its first item;
    per-pixel maps pooled; one dict per probe (a detection model's) made one score per class and image."""

    def what(value: Any) -> str:
        return f"Tensor {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__

    def logits_like(value: Any) -> bool:
        return isinstance(value, Tensor) and value.ndim == 2 and value.shape[0] == batch

    kind = type(output).__name__
    a = "an" if kind[:1].lower() in "aeiou" else "a"  # "an OrderedDict"
    if isinstance(output, dict):
        first = next(iter(output), "logits")
        best = next((k for k in ["logits", *output] if k in output and logits_like(output[k])), first)
        items = ", ".join(f"{k!r}: {what(v)}" for k, v in list(output.items())[:6])
        pool = pooled(output.get(best), batch)
        per_pixel = f" (its {best!r}: per-pixel outputs, e.g. a segmentation model's)" if pool else ""
        return f"{a} {kind} with keys {{{items}}}{per_pixel}", f"module(x)[{best!r}]{pool}"
    if isinstance(output, (tuple, list)) and len(output) == batch and all(isinstance(v, dict) for v in output):
        return per_probe_dicts(output)
    if isinstance(output, (tuple, list)):
        index = next((i for i, v in enumerate(output) if logits_like(v)), 0)
        items = ", ".join(what(v) for v in output[:6])
        return f"{a} {kind} of {len(output)}: ({items})", f"module(x)[{index}]"
    if logits_like(getattr(output, "logits", None)):
        return f"{a} {kind} (with a `logits` attribute)", "module(x).logits"
    return ("None" if output is None else f"{a} {kind}"), "module(x)['logits']"


def per_probe_dicts(output: list[Any] | tuple[Any, ...]) -> tuple[str, str]:
    """:func:`describe_output` for one dict per probe: a detection model's (``labels`` and ``scores``) as each class's
    highest detection score per image, else the first key's values stacked."""
    keys = list(output[0]) if output else []
    said = f"a {type(output).__name__} of {len(output)} dicts, one per probe, with keys {keys[:6]}"
    if all("labels" in d and "scores" in d for d in output):
        return (
            f"{said} (a detection model's detections; the monitor explains one score per class and image: below, "
            "each class's highest detection score, with `num_classes` your model's)",
            "torch.stack([d['scores'].new_zeros(num_classes).scatter_reduce(0, d['labels'], d['scores'], 'amax') "
            "for d in module(x)])",
        )
    first = keys[0] if keys else "logits"
    return f"{said} (the monitor explains one (N, num_classes) tensor for the batch)", (
        f"torch.stack([d[{first!r}] for d in module(x)])"
    )


def pooled(value: Any, batch: int) -> str:
    """How to pool per-pixel outputs to one score per class and image: ``".mean(dim=(2, 3))"`` for a
    ``(batch, C, H, W)`` tensor (a segmentation model's), ``""`` for anything else."""
    if not isinstance(value, Tensor) or value.ndim < 4 or value.shape[0] != batch:
        return ""
    return f".mean(dim={tuple(range(2, value.ndim))})"


def shape_fix(shape: tuple[int, ...], batch: int, custom: bool = False) -> str:
    """What to do about a forward (``custom``: the user's ``forward_fn``) that returns a tensor of ``shape`` for
    ``batch`` probes, not ``(N, num_classes)`` logits: a one-column ``.unsqueeze(1)``, per-pixel outputs pooled, else
    select them."""

    def use(expression: str) -> str:
        if custom:
            return f"make `forward_fn` return `out{expression}`, with `out` what it returns now"
        return f"pass `forward_fn=lambda module, x: module(x){expression}`"

    if len(shape) == 1 and shape[0] == batch:  # a binary head squeezed to (N,)
        return (
            "One logit per probe, (N, 1), is read as a binary classifier (class 1 where sigmoid(logit) > 0.5): "
            f"{use('.unsqueeze(1)')}"
        )
    pool = pooled(torch.empty(shape, device="meta"), batch)
    if pool:
        return (
            f"These are per-pixel outputs (C={shape[1]} maps of {'x'.join(map(str, shape[2:]))}, e.g. a segmentation "
            "model's), and the monitor explains one score per class and image: to explain each class's mean score "
            f"over the image, {use(pool)} (or pool the region you care about)"
        )
    return "Make `forward_fn` return them" if custom else "Pass `forward_fn=` to select them"


def not_logits_message(model: str, err: NotLogitsError, custom: bool) -> str:
    """The setup refusal of a forward (``custom``: the user's ``forward_fn``) that returns no tensor."""
    if custom:
        return (
            f"`forward_fn` returns {err.description}, not a logits tensor, so the monitor cannot read {model}'s "
            "predictions on the probes: make it return the (N, num_classes) logits, e.g. "
            f"`{err.body.replace('module(x)', 'out')}`, with `out` what it returns now."
        )
    return (
        f"{model}'s forward returns {err.description}, not a logits tensor, so the monitor cannot read its "
        "predictions on the probes: pass `forward_fn=` to pick the (N, num_classes) logits, e.g. "
        f"`AttributionMonitor(..., {err.fix})` (a module-level function or `functools.partial` for "
        "`strategy='ddp_spawn'`)."
    )


def _call_module(module: Any, x: Tensor) -> Any:
    return module(x)


@contextmanager
def uncompiled(module: nn.Module) -> Iterator[None]:
    """Run ``module`` and its submodules with their original Python forwards inside the block: undoes a
    LightningModule compiled through Lightning (``_compiler_ctx``), ``nn.Module.compile()`` (``_compiled_call_impl``)
    and ``torch.compile``d submodules (``OptimizedModule``), and puts them back on exit."""
    restore: list[tuple[dict[str, Any], str, Any]] = []  # (namespace, key, the compiled value)
    try:
        ctx = getattr(module, "_compiler_ctx", None)
        original = ctx.get("original_forward") if isinstance(ctx, dict) else None
        if original is not None and "forward" in module.__dict__:
            compiled = module.__dict__["forward"]
            module.forward = original  # type: ignore[method-assign]
            restore.append((module.__dict__, "forward", compiled))
        for sub in module.modules():
            impl = sub.__dict__.get("_compiled_call_impl")
            if impl is not None:
                sub._compiled_call_impl = None
                restore.append((sub.__dict__, "_compiled_call_impl", impl))
            orig_mod = sub.__dict__.get("_modules", {}).get("_orig_mod")
            if type(sub).__name__ == "OptimizedModule" and orig_mod is not None and "forward" in sub.__dict__:
                compiled_forward = sub.__dict__["forward"]
                sub.__dict__["forward"] = orig_mod.__call__
                restore.append((sub.__dict__, "forward", compiled_forward))
        yield
    finally:
        for namespace, key, value in reversed(restore):
            namespace[key] = value


@contextmanager
def model_forward(module: nn.Module, forward_fn: ModelForwardFn | None = None) -> Iterator[ForwardFn]:
    """Yield ``forward(x) -> (N, num_classes)`` float32 logits for explaining ``module``: uncompiled (Captum's
    per-call hooks), with float32 copies of half/bfloat16 weights through ``torch.func.functional_call`` (the
    training weights stay as they are), probes cast to float32, ``forward_fn(module, x)`` instead of ``module(x)``."""
    call_fn, wrapper = forward_fn or _call_module, _Call(module, forward_fn or _call_module)
    with uncompiled(module):
        tensors = dict(chain(module.named_parameters(), module.named_buffers()))
        low = any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors.values())
        state = {f"module.{n}": t.detach().float() if t.is_floating_point() else t for n, t in tensors.items() if low}

        def forward(x: Tensor) -> Tensor:
            out = torch.func.functional_call(wrapper, state, (x.float(),)) if low else call_fn(module, x.float())
            if not isinstance(out, Tensor):
                raise NotLogitsError(out, len(x))
            return out.float()

        yield forward


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: a LightningModule's ``device``, else its parameters'."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters(), torch.empty(0)).device


def synchronize(device: torch.device) -> None:
    """Wait for the kernels queued on a CUDA ``device`` (before a time is taken)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
