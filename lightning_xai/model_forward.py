"""The forward function attributions are computed with: float32, uncompiled, logits only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.explainers.base import ForwardFn


def _needs_float32_copy(module: nn.Module) -> bool:
    tensors = chain(module.parameters(), module.buffers())
    return any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors)


@contextmanager
def model_forward(module: nn.Module, output_transform: Callable[[Any], Tensor] | None = None) -> Iterator[ForwardFn]:
    """Yield ``forward(x) -> (N, num_classes)`` float32 logits for explaining ``module``.

    - ``torch.compile``: a LightningModule compiled by Lightning keeps its original forward in
      ``_compiler_ctx``; it is used here (Captum adds hooks per call, which compiled graphs miss or recompile
      for), and the compiled forward is put back on exit.
    - Precision: parameters and buffers stored in half/bfloat16 (``precision="bf16-true"``/``"16-true"``) are
      not touched; the forward runs through ``torch.func.functional_call`` with float32 copies of them, so
      attributions are float32 and training weights stay exactly as they are. Mixed precision keeps float32
      weights and callback hooks run outside autocast, so nothing is copied there.
    - ``output_transform`` picks the logits from dict/tuple outputs.

    Example::

        >>> net = torch.nn.Linear(3, 2).to(torch.bfloat16)
        >>> with model_forward(net) as forward:
        ...     forward(torch.ones(1, 3)).dtype
        torch.float32
    """
    ctx = getattr(module, "_compiler_ctx", None)
    original = ctx.get("original_forward") if isinstance(ctx, dict) else None
    compiled = module.__dict__.get("forward") if original is not None else None
    if original is not None:
        module.forward = original  # type: ignore[method-assign]
    try:
        if _needs_float32_copy(module):
            state = {
                name: t.detach().float() if t.is_floating_point() else t
                for name, t in chain(module.named_parameters(), module.named_buffers())
            }

            def call(x: Tensor) -> Any:
                return torch.func.functional_call(module, state, (x.float(),))

        else:

            def call(x: Tensor) -> Any:
                return module(x.float())

        def forward(x: Tensor) -> Tensor:
            out = call(x)
            if output_transform is not None:
                out = output_transform(out)
            if not isinstance(out, Tensor):
                raise TypeError(
                    f"the model returned {type(out).__name__}, not a logits tensor; pass `output_transform=` to "
                    "pick the (N, num_classes) logits from the output, e.g. `output_transform=lambda out: "
                    "out['logits']`."
                )
            return out.float()

        yield forward
    finally:
        if compiled is not None:
            module.forward = compiled  # type: ignore[method-assign]
