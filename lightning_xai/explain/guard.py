"""Leave the training run exactly as it was found: everything the monitor does to a model happens inside
:func:`training_state_guard`, which restores modes, ``requires_grad`` flags, gradients, buffers, module attributes,
hooks and RNG streams on exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from lightning_xai._rng import isolated_rng

__all__ = ["isolated_rng", "restore_attributes", "snapshot_attributes", "training_state_guard"]

_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_PLAIN = (bool, int, float, str, type(None))

AttributeSnapshot = list[tuple[nn.Module, dict[str, Any]]]


def snapshot_attributes(model: nn.Module) -> AttributeSnapshot:
    """The instance attributes of every module of ``model``, for :func:`restore_attributes`."""
    return [(m, dict(vars(m))) for m in model.modules()]


def restore_attributes(snapshot: AttributeSnapshot) -> None:
    """Remove the instance attributes a module gained since :func:`snapshot_attributes`, put back those it lost (LRP
    deletes every layer's ``rule``, a user's own included) and the plain values (flags, counters) it changed."""
    for module, saved in snapshot:
        current = vars(module)
        for name in [n for n in current if n not in saved]:
            del current[name]
        for name, value in saved.items():
            if name not in current or (isinstance(value, _PLAIN) and current[name] is not value):
                current[name] = value


@contextmanager
def training_state_guard(
    model: nn.Module, device: torch.device | None = None, restore_values: bool = False
) -> Iterator[None]:
    """Run code against ``model`` in eval mode, parameters frozen, grad mode on (even under ``inference_mode``/
    ``no_grad``), autocast off, RNGs forked and a LightningModule's ``log``/``log_dict`` silenced; on exit (also after
    an exception) ``requires_grad`` flags, ``.grad`` tensors, buffers (also reassigned ones), module attributes
    (:func:`restore_attributes`), RNG streams and hooks are as they were. ``restore_values`` (the setup check): also
    the parameters' values, so that a model's first forward happens again in its first training step. Clone tensors
    made under ``torch.inference_mode`` inside the block before they reach autograd."""
    modules, params = list(model.modules()), list(model.parameters())
    requires = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    grad_values = [None if g is None else g.detach().clone() for g in grads]  # None outside accumulation
    buffers = [{n: (b, None if b is None else b.detach().clone()) for n, b in m._buffers.items()} for m in modules]
    values = [p.detach().to("cpu", copy=True) for p in params] if restore_values else []  # no device memory spike
    attributes = snapshot_attributes(model)  # `log` shadows and train/eval flags too
    hooks = {m: {n: set(getattr(m, n, {})) for n in _HOOKS} for m in modules}
    silenced = [m for m in modules if callable(getattr(m, "log_dict", None)) and "log" not in m.__dict__]
    try:
        with ExitStack() as stack:
            stack.enter_context(isolated_rng(device))
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad())
            for device_type in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
            for m in silenced:
                object.__setattr__(m, "log", _no_log)
                object.__setattr__(m, "log_dict", _no_log)
            model.eval()
            for p in params:
                p.requires_grad_(False)
            yield
    finally:
        for p, flag in zip(params, requires, strict=True):
            p.requires_grad_(flag)
        with torch.no_grad():
            for p, g, value in zip(params, grads, grad_values, strict=True):
                if p.grad is not g:
                    p.grad = g
                if g is not None and value is not None and not torch.equal(g, value):
                    g.copy_(value)
            for p, saved in zip(params, values, strict=False):
                if not torch.equal(p.detach().cpu(), saved):
                    p.copy_(saved)
            for m, kept in zip(modules, buffers, strict=True):  # the buffer objects a forward reassigned, and values
                for name in [n for n in m._buffers if n not in kept]:
                    del m._buffers[name]
                for name, (buffer, value) in kept.items():
                    if m._buffers.get(name) is not buffer:
                        m._buffers[name] = buffer
                    if buffer is not None and value is not None and not torch.equal(buffer, value):
                        buffer.copy_(value)
        restore_attributes(attributes)
        for m in model.modules():  # matched by module, so a module a forward created does not shift which are new
            known = hooks.get(m)
            for n in _HOOKS:
                registered = getattr(m, n, {})
                for key in [k for k in registered if known is None or k not in known[n]]:
                    del registered[key]


def _no_log(*args: Any, **kwargs: Any) -> None:
    """Stands in for ``LightningModule.log``/``log_dict`` while the monitor runs the model."""
