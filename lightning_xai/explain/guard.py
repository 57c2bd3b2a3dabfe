"""Leave the training run exactly as it was found.

Everything the monitor does to a model happens inside :func:`training_state_guard`: it switches the model to
eval mode, freezes the parameters (so autograd computes gradients with respect to the inputs only — cheaper,
and no parameter ``.grad`` can be written), escapes ``no_grad``/``inference_mode``/autocast, isolates every
random number generator, and on exit restores train/eval flags, ``requires_grad`` flags, BatchNorm buffers,
parameter gradients and RNG streams. It also checks that no hook was left behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from lightning_xai._rng import isolated_rng

__all__ = ["isolated_rng", "training_state_guard"]


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _remove_hooks_added(module: nn.Module, before: dict[nn.Module, dict[str, set[int]]]) -> None:
    """Remove the hooks registered since :func:`_hook_ids` (matched by module, so a module a forward created or
    moved does not shift which hooks count as new)."""
    for m in module.modules():
        known = before.get(m)
        for n in _HOOKS:
            hooks = getattr(m, n, None)
            if hooks is None:
                continue
            for key in [k for k in hooks if known is None or k not in known[n]]:
                del hooks[key]


def _hook_ids(module: nn.Module) -> dict[nn.Module, dict[str, set[int]]]:
    return {m: {n: set(getattr(m, n, {}).keys()) for n in _HOOKS} for m in module.modules()}


@contextmanager
def training_state_guard(
    model: nn.Module, device: torch.device | None = None, restore_values: bool = False
) -> Iterator[None]:
    """Run code against ``model`` in eval mode with gradients enabled, then restore every training state.

    Inside the block: every module is in eval mode, parameters have ``requires_grad=False``, grad mode is on
    even under ``torch.inference_mode`` or ``torch.no_grad``, autocast is off, RNGs are forked, and a
    LightningModule's ``log``/``log_dict`` do nothing (a forward that logs does not log the monitor's passes). On exit
    (also after an exception) the previous mode flags, ``requires_grad`` flags, parameter ``.grad`` tensors,
    buffers (BatchNorm running statistics, also when ``forward`` reassigned them) and RNG streams are restored, and
    any hook registered inside the block and not removed is removed.

    Every module's plain Python attributes (flags, counters, strings) are put back as they were and attributes a
    forward added are removed, so a forward that counts its calls counts only the training's. ``restore_values``
    (the setup check, which runs before training): also the parameters' values, so what a model does in its first
    forward (data-dependent initialisation, hooks it registers once) happens in its first training step, as without
    the monitor.

    Tensors created under ``torch.inference_mode`` must be cloned inside the block before they reach autograd.

    Example::

        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).train()
        >>> with training_state_guard(net):
        ...     x = torch.ones(3, 2, requires_grad=True)
        ...     g, = torch.autograd.grad(net(x).sum(), x)
        >>> net.training, net[0].weight.grad is None
        (True, True)
    """
    modules = list(model.modules())
    params = list(model.parameters())
    requires = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    grad_values = [g.detach().clone() if g is not None else None for g in grads]  # None outside accumulation
    buffers = [{n: (b, None if b is None else b.detach().clone()) for n, b in m._buffers.items()} for m in modules]
    values = [p.detach().to("cpu", copy=True) for p in params] if restore_values else []  # no device memory spike
    attributes = [_plain_attributes(m) for m in modules]  # train/eval flags too; `log` shadows are removed as added
    hook_ids = _hook_ids(model)
    autocast_types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    silenced = [m for m in modules if callable(getattr(m, "log_dict", None)) and "log" not in m.__dict__]
    try:
        with isolated_rng(device), torch.inference_mode(False), torch.enable_grad():
            with _autocast_disabled(autocast_types):
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
            for m, saved_buffers in zip(modules, buffers, strict=True):
                _restore_buffers(m, saved_buffers)
        for m, saved_attributes in zip(modules, attributes, strict=True):
            _restore_attributes(m, saved_attributes)
        _remove_hooks_added(model, hook_ids)


def _no_log(*args: Any, **kwargs: Any) -> None:
    """Stands in for ``LightningModule.log``/``log_dict`` while the monitor runs the model."""


_PLAIN = (bool, int, float, str, type(None))


def _plain_attributes(module: nn.Module) -> tuple[set[str], dict[str, Any]]:
    """The names of a module's instance attributes, and the values of its plain ones (flags, counters, strings)."""
    return set(module.__dict__), {k: v for k, v in module.__dict__.items() if isinstance(v, _PLAIN)}


def _restore_attributes(module: nn.Module, saved: tuple[set[str], dict[str, Any]]) -> None:
    names, plain = saved
    for name in [n for n in module.__dict__ if n not in names]:
        del module.__dict__[name]
    for name, value in plain.items():
        if module.__dict__.get(name, _MISSING) is not value:
            module.__dict__[name] = value


_MISSING = object()


def _restore_buffers(module: nn.Module, saved: dict[str, tuple[Any, Any]]) -> None:
    """Put back the buffer objects a forward reassigned (``self.count = self.count + 1``) and their values; drop
    buffers it added."""
    for name in [n for n in module._buffers if n not in saved]:
        del module._buffers[name]
    for name, (buffer, value) in saved.items():
        if module._buffers.get(name) is not buffer:
            module._buffers[name] = buffer
        if buffer is not None and value is not None and not torch.equal(buffer, value):
            buffer.copy_(value)


@contextmanager
def _autocast_disabled(device_types: list[str]) -> Iterator[None]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        for device_type in device_types:
            stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield
