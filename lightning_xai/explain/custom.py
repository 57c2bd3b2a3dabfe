"""Any attribution as a method of ``methods=``: a Captum class (:class:`CaptumExplainer`) or a function."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.explain.base import Explainer, Explanation, ForwardFn, check_float, check_int, check_name
from lightning_xai.explain.layer_choice import choose_gradcam_layer
from lightning_xai.explain.layers import resolve_module, trace_modules
from lightning_xai.explain.wrapping import (
    REDUCTIONS,
    CaptumMethod,
    ForwardModule,
    primitive,
    reduce_channels,
    seeded_rng,
    to_display,
)

#: ``fn(forward, inputs, targets) -> (P, C, H, W) or (P, h, w)`` attribution of ``forward(inputs)[i, targets[i]]``
AttributionFn = Callable[[ForwardFn, Tensor, Tensor], Tensor]


def _common(owner: str, name: str | None, reduce: str, passes_per_probe: float, seed: int) -> tuple[float, int]:
    check_name("name", name, allow_none=True)
    if reduce not in REDUCTIONS:
        raise ValueError(f"`reduce` must be one of {REDUCTIONS}, got {reduce!r}.")
    return check_float("passes_per_probe", passes_per_probe, 0, where=owner), check_int("seed", seed, 0, where=owner)


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class CaptumExplainer(CaptumMethod):
    """Any Captum class as a method: ``captum_cls(forward)`` (``(model)`` if it hooks layers, ``(forward, layer)``
    for ``Layer*``), then ``.attribute(probes, target=targets, **attribute_kwargs)``, reduced over channels.

    Args:
        captum_cls: a class from ``captum.attr`` (e.g. ``FeatureAblation``, ``KernelShap``, ``LayerGradCam``).
        name: the method's name in tags (``xai/<name>/...``); default: the class name in snake case.
        layer: for ``Layer*`` classes, a dotted module name or the module; None: Grad-CAM's automatic layer.
        reduce: one of :data:`~lightning_xai.explain.wrapping.REDUCTIONS` (``"sum"``: signed).
        passes_per_probe: the method's cost, for the docs and budgets (e.g. ``n_samples`` for sampling methods).
        seed: seed of the random draws inside the call (the training RNG untouched).
        init_kwargs: more constructor arguments (e.g. ``multiply_by_inputs=False``).
        **attribute_kwargs: passed to ``attribute`` (e.g. ``n_samples=``, ``baselines=``, ``feature_mask=``).

    Example::

        >>> import captum.attr
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> ablation = CaptumExplainer(captum.attr.FeatureAblation, passes_per_probe=4)
        >>> ablation.name, tuple(ablation.explain(net, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])).raw.shape)
        ('feature_ablation', (3, 2, 2))
    """

    display_normalization = "max"

    def __init__(
        self,
        captum_cls: type,
        name: str | None = None,
        *,
        layer: str | nn.Module | None = None,
        reduce: str = "sum",
        passes_per_probe: float = 1.0,
        seed: int = 0,
        init_kwargs: dict[str, Any] | None = None,
        **attribute_kwargs: Any,
    ) -> None:
        if not isinstance(captum_cls, type) or not hasattr(captum_cls, "attribute"):
            raise ValueError(
                f"`captum_cls` must be a Captum attribution class such as captum.attr.Saliency, got {captum_cls!r}."
            )
        self.passes_per_probe, self.seed = _common("CaptumExplainer", name, reduce, passes_per_probe, seed)
        params = [p.name for p in inspect.signature(captum_cls).parameters.values() if p.name != "self"]
        if not params:
            raise ValueError(
                f"{captum_cls.__qualname__} takes no model or forward function; it is not a Captum method."
            )
        self.captum_cls, self.first_argument, self.takes_layer = captum_cls, params[0], "layer" in params
        self.hooks_model = self.first_argument == "model"
        self.name = name or _snake_case(captum_cls.__name__)
        self.layer, self.reduce = layer, reduce
        self.init_kwargs, self.attribute_kwargs = dict(init_kwargs or {}), attribute_kwargs
        self._module: nn.Module | None = None

    def config(self) -> dict[str, Any]:
        layer = self.layer if self.layer is None or isinstance(self.layer, str) else f"<{type(self.layer).__name__}>"
        own = {"captum": self.captum_cls.__qualname__, "layer": layer, "reduce": self.reduce, "seed": self.seed}
        return own | {k: primitive(v) for k, v in sorted({**self.init_kwargs, **self.attribute_kwargs}.items())}

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        self._model = model
        if self.takes_layer and self.layer is not None:
            _, self._module = resolve_module(model, self.layer, f"{type(self).__name__}.layer")
        elif self.takes_layer:
            choice = choose_gradcam_layer(model, forward, example, trace_modules(model, forward, example))
            chosen = choice.name
            if chosen is None:
                why = (
                    "none of its spatial feature maps is a layer every path from the input to the logits passes "
                    "through (the share of the input gradient left with its output detached: "
                    + ", ".join(f"`{n}` {share:.1%}" for n, share in list(choice.shares.items())[:4])
                    + ")"
                    if choice.shares
                    else "the model has no spatial feature map with the probes' layout"
                )
                raise ValueError(
                    f"`methods` includes {self.name!r} ({self.captum_cls.__name__}) but no layer was given and "
                    f"{why}; pass `layer=`."
                )
            self._module = dict(model.named_modules())[chosen]

    def build(self, forward: ForwardFn) -> Any:
        if (self.hooks_model and self._model is None) or (self.takes_layer and self._module is None):
            raise RuntimeError(f"{self.captum_cls.__name__} needs the model: setup() must run before explain().")
        first = ForwardModule(self._model, forward) if self._model is not None and self.hooks_model else forward
        layer = (self._module,) if self.takes_layer else ()
        return self.captum_cls(first, *layer, **self.init_kwargs)

    def attribute(self, method: Any, inputs: Tensor, targets: Tensor, batch: Tensor) -> Any:
        result = super().attribute(method, inputs, targets, batch)
        return result[0] if isinstance(result, tuple) else result


class FunctionExplainer(Explainer):
    """Your function as a method: ``fn(forward, inputs, targets)`` -> ``(P, C, H, W)`` or ``(P, h, w)`` attribution
    of ``forward(inputs)[i, targets[i]]``, run with grad on, the model in eval mode and frozen, RNG seeded.

    Args:
        fn: the attribution function (picklable, i.e. module-level, for ``strategy="ddp_spawn"``).
        name: the method's name in tags; default: the function's name.
        reduce, passes_per_probe, seed: as for :class:`CaptumExplainer`.

    Example::

        >>> def gradient(forward, inputs, targets):
        ...     x = inputs.detach().requires_grad_(True)
        ...     return torch.autograd.grad(forward(x).gather(1, targets[:, None]).sum(), x)[0]
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = FunctionExplainer(gradient).explain(net, torch.rand(1, 1, 2, 2), torch.tensor([1]))
        >>> torch.allclose(out.raw.flatten(), net[1].weight[1])
        True
    """

    def __init__(
        self,
        fn: AttributionFn,
        name: str | None = None,
        *,
        reduce: str = "sum",
        passes_per_probe: float = 1.0,
        seed: int = 0,
    ) -> None:
        if not callable(fn):
            raise ValueError(f"`fn` must be a callable (forward, inputs, targets) -> attribution, got {fn!r}.")
        self.passes_per_probe, self.seed = _common("FunctionExplainer", name, reduce, passes_per_probe, seed)
        self.fn, self.reduce = fn, reduce
        self.name = name or _snake_case(getattr(fn, "__name__", type(fn).__name__)).strip("_<>") or "function"

    def config(self) -> dict[str, Any]:
        return {"function": primitive(self.fn), "reduce": self.reduce, "seed": self.seed}

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        with seeded_rng(self.seed, inputs.device):
            attribution = self.fn(forward, inputs, targets)
        if not isinstance(attribution, Tensor) or attribution.ndim not in (3, 4) or len(attribution) != len(inputs):
            got = tuple(attribution.shape) if isinstance(attribution, Tensor) else type(attribution).__name__
            raise ValueError(
                f"{self.name}: the function must return a (P, C, H, W) or (P, h, w) tensor with P={len(inputs)}, "
                f"got {got}."
            )
        raw = reduce_channels(attribution.to(torch.float32), self.reduce)
        return Explanation(raw=raw, display=to_display(raw, tuple(inputs.shape[-2:])))
