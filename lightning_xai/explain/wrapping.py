"""What the Captum explainers share: :class:`CaptumMethod`, a seeded RNG that no training stream sees, helpers."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._rng import isolated_rng, seed_streams
from lightning_xai.explain.base import (
    Explainer,
    Explanation,
    ForwardFn,
    check_baseline,
    check_baseline_shape,
    check_float,
    check_int,
)

#: how channels become one map: ``"sum"`` keeps the sign, ``"abs_max"`` the largest magnitude, ``"mean"`` averages
REDUCTIONS = ("sum", "abs_max", "mean")


class ForwardModule(nn.Module):
    """``forward(x)`` as a module holding the model as its child, for Captum classes that hook the model's layers."""

    def __init__(self, model: nn.Module, forward: ForwardFn) -> None:
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x)


@contextmanager
def seeded_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Torch (CPU and ``device``), numpy and Python draw from streams seeded with ``seed``, restored on exit."""
    with isolated_rng(device):
        seed_streams(device, seed)  # this CUDA device only (isolated_rng restores it)
        yield


def reduce_channels(attribution: Tensor, reduce: str = "sum") -> Tensor:
    """``(P, C, h, w)`` (or ``(P, h, w)``) attribution -> ``(P, h, w)`` float32 map (see :data:`REDUCTIONS`)."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"`reduce` must be one of {REDUCTIONS}, got {reduce!r}.")
    a = attribution.detach().float()
    if a.ndim not in (3, 4):
        raise ValueError(f"an attribution must be (P, C, h, w) or (P, h, w), got shape {tuple(attribution.shape)}.")
    if a.ndim == 3:
        return a.abs() if reduce == "abs_max" else a
    return a.sum(dim=1) if reduce == "sum" else a.mean(dim=1) if reduce == "mean" else a.abs().amax(dim=1)


def to_display(raw: Tensor, size: tuple[int, ...]) -> Tensor:
    """``|raw|`` at the input's ``size`` (bilinear when the map is coarser), the non-negative map that is drawn."""
    display = raw.abs()
    if tuple(display.shape[-2:]) != tuple(size):
        display = F.interpolate(display[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return display.clamp_min(0)


def primitive(value: Any) -> Any:
    """A short primitive describing ``value`` for :meth:`~lightning_xai.explain.base.Explainer.config`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Tensor):  # digested in the state key, described in words in the settings
        return float(value) if value.numel() == 1 else value.detach().cpu()
    if isinstance(value, (tuple, list)):
        return [primitive(v) for v in value]
    return getattr(value, "__qualname__", type(value).__qualname__)


def expand_baseline(baseline: float | Tensor | None, inputs: Tensor) -> Tensor:
    """One reference input per probe from None (zeros), a float or a tensor broadcastable to one probe or the batch."""
    if not isinstance(baseline, Tensor):
        return torch.full_like(inputs, float(baseline or 0.0))
    b = baseline.detach().to(device=inputs.device, dtype=inputs.dtype)
    try:
        return torch.broadcast_to(b, inputs.shape).clone()
    except RuntimeError as err:
        raise ValueError(
            f"the baseline of shape {tuple(b.shape)} does not broadcast to the probes {tuple(inputs.shape)}; pass a "
            "float, a tensor shaped like one probe (C, H, W), or per-channel values (C, 1, 1)."
        ) from err


class CaptumMethod(Explainer):
    """One Captum class: :meth:`build` it on the forward function (on a :class:`ForwardModule` when ``hooks_model``),
    :meth:`attribute` slices of :meth:`probes_per_call` probes (``no_grad`` when ``forward_only``; RNG seeded with
    ``seed`` unless None), reduce the channels (``reduce``), show ``|raw|``; a convergence delta becomes the
    diagnostic ``gap_name``. Dataclass subclasses check (:attr:`minimums`) and describe (:meth:`config`) their fields.
    """

    captum_cls: Any = None
    reduce = "sum"
    hooks_model = False
    forward_only = False
    seed: int | None = None
    gap_name = "completeness_gap"
    display_normalization = "percentile"
    _model: nn.Module | None = None
    attribute_kwargs: dict[str, Any] = {}  # more keywords for Captum's ``attribute``
    #: fields checked when made, name -> minimum (an int one wants an int; a None default allows None)
    minimums: ClassVar[dict[str, float]] = {}

    def __post_init__(self) -> None:
        for name, low in self.minimums.items():
            check: Callable[..., Any] = check_int if isinstance(low, int) else check_float
            optional = getattr(type(self), name, 0) is None
            setattr(self, name, check(name, getattr(self, name), low, allow_none=optional, where=type(self).__name__))
        if "baseline" in vars(self):  # the reference input of DeepLift, Occlusion, LIME, GradientShap
            vars(self)["baseline"] = check_baseline(vars(self)["baseline"], type(self).__name__)
        self.passes_per_probe = float(getattr(self, "samples", self.passes_per_probe))  # one pass per sample

    def config(self) -> dict[str, Any]:
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: primitive(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "batch_size"}

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        check_baseline_shape(f"{type(self).__name__}(baseline=...)", getattr(self, "baseline", None), example.shape[1:])
        self._model = model

    def build(self, forward: ForwardFn) -> Any:
        """The Captum object for this call."""
        if not self.hooks_model:
            return self.captum_cls(forward)
        if self._model is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before explain().")
        return self.captum_cls(ForwardModule(self._model, forward))

    def probes_per_call(self, num_probes: int) -> int:
        return num_probes

    def attribute(self, method: Any, inputs: Tensor, targets: Tensor, batch: Tensor) -> Any:
        """Captum's ``attribute`` on one slice of the probes ``batch``: the attribution, or ``(attribution, delta)``."""
        return method.attribute(inputs, target=targets, **self.attribute_kwargs)

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        step = self.probes_per_call(len(inputs))
        with ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())  # Captum's UserWarnings would repeat every evaluation
            warnings.filterwarnings("ignore", category=UserWarning, module=r"captum(\.|$)")
            method = self.build(forward)
            if self.seed is not None:
                stack.enter_context(seeded_rng(self.seed, inputs.device))
            if self.forward_only:
                stack.enter_context(torch.no_grad())
                inputs = inputs.detach()
            slices = [slice(i, i + step) for i in range(0, len(inputs), step)]
            parts = [self.attribute(method, inputs[s], targets[s], inputs) for s in slices]
        deltas = [p[1] for p in parts if isinstance(p, tuple) and len(p) == 2]
        raw = reduce_channels(torch.cat([p[0] if isinstance(p, tuple) else p for p in parts]), self.reduce)
        gaps = {self.gap_name: torch.cat(deltas).detach().float().abs()} if deltas else {}
        return Explanation(raw=raw, display=to_display(raw, tuple(inputs.shape[-2:])), diagnostics=gaps)
