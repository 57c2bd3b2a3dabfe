"""The private torch/Lightning attributes `lightning_xai.explain.forward.uncompiled` relies on (no public API exists to
run a compiled module's original forward). Each test fails loudly, naming the attribute, when a release changes it."""

from __future__ import annotations

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities.compile import from_compiled
from torch import nn


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_lightning_keeps_the_original_forward_in_compiler_ctx() -> None:
    model = Tiny()
    compiled = from_compiled(torch.compile(model))
    ctx = getattr(compiled, "_compiler_ctx", None)
    assert isinstance(ctx, dict) and "original_forward" in ctx, "Lightning no longer sets `_compiler_ctx`"
    assert "forward" in compiled.__dict__, "Lightning no longer replaces `forward` on the instance"


def test_module_compile_in_place_sets_compiled_call_impl() -> None:
    lin = nn.Linear(3, 2)
    lin.compile()
    assert lin.__dict__.get("_compiled_call_impl") is not None, (
        "nn.Module.compile() no longer sets `_compiled_call_impl`"
    )


def test_torch_compile_wraps_in_optimized_module_with_orig_mod() -> None:
    lin = nn.Linear(3, 2)
    wrapped = torch.compile(lin)
    assert type(wrapped).__name__ == "OptimizedModule", "torch.compile no longer returns an `OptimizedModule`"
    assert wrapped.__dict__["_modules"].get("_orig_mod") is lin, "`OptimizedModule._orig_mod` moved"
    assert "forward" in wrapped.__dict__, "`OptimizedModule.forward` is no longer an instance attribute"


def test_uncompiled_runs_the_python_forward_and_restores_everything() -> None:
    from lightning_xai.explain.forward import uncompiled

    lin = nn.Linear(3, 2)
    lin.compile()
    impl = lin.__dict__["_compiled_call_impl"]
    wrapped = torch.compile(nn.Sequential(nn.Linear(3, 3)))
    fwd = wrapped.__dict__["forward"]
    with uncompiled(lin), uncompiled(wrapped):
        assert lin.__dict__["_compiled_call_impl"] is None
        assert wrapped.__dict__["forward"] is not fwd
    assert lin.__dict__["_compiled_call_impl"] is impl and wrapped.__dict__["forward"] is fwd
