"""Plug in any attribution: a Captum class (:class:`CaptumExplainer`) or a function (:class:`FunctionExplainer`).
Either becomes a method of ``methods=`` like the built-in ones: it runs batched under the monitor's guard (eval
mode, frozen parameters, RNG streams isolated and seeded), its maps are drifted, drawn and alerted on.

Example::

    >>> import captum.attr
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> ablation = CaptumExplainer(captum.attr.FeatureAblation, passes_per_probe=4)
    >>> ablation.name, tuple(ablation.explain(net, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])).raw.shape)
    ('feature_ablation', (3, 2, 2))
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.explain.base import Explainer, Explanation, ForwardFn
from lightning_xai.explain.layers import auto_gradcam_layer, resolve_module, trace_modules
from lightning_xai.explain.wrapping import (
    REDUCTIONS,
    ForwardModule,
    primitive,
    quiet_captum,
    reduce_channels,
    seeded_rng,
    to_display,
)

#: ``fn(forward, inputs, targets) -> (P, C, H, W) or (P, h, w)`` attribution of ``forward(inputs)[i, targets[i]]``
AttributionFn = Callable[[ForwardFn, Tensor, Tensor], Tensor]


def snake_case(name: str) -> str:
    """``"FeatureAblation"`` -> ``"feature_ablation"``.

    Example::

        >>> snake_case("FeatureAblation"), snake_case("LayerGradCam"), snake_case("my_fn")
        ('feature_ablation', 'layer_grad_cam', 'my_fn')
    """
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _check_common(name: str | None, reduce: str, passes_per_probe: float, seed: int) -> None:
    if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name)):
        raise ValueError(f"`name` must be a non-empty tag of letters, digits, '_', '.', '-', got {name!r}.")
    if reduce not in REDUCTIONS:
        raise ValueError(f"`reduce` must be one of {REDUCTIONS}, got {reduce!r}.")
    if isinstance(passes_per_probe, bool) or not isinstance(passes_per_probe, (int, float)) or passes_per_probe < 0:
        raise ValueError(f"`passes_per_probe` must be a number >= 0, got {passes_per_probe!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0, got {seed!r}.")


def _first_argument(captum_cls: type) -> tuple[str, bool]:
    """The name of the Captum class's first constructor argument and whether it takes a ``layer``."""
    params = [p for p in inspect.signature(captum_cls).parameters.values() if p.name != "self"]
    if not params:
        raise ValueError(f"{captum_cls.__qualname__} takes no model or forward function; it is not a Captum method.")
    return params[0].name, any(p.name == "layer" for p in params)


class CaptumExplainer(Explainer):
    """Any Captum attribution class as a method: ``captum_cls(forward)`` (or ``captum_cls(model)`` for the classes
    that hook the model's layers, e.g. ``DeepLiftShap``, ``Deconvolution``; or ``captum_cls(forward, layer)`` for
    ``Layer*`` classes), then ``.attribute(probes, target=targets, **attribute_kwargs)`` on the whole batch. The
    attribution is reduced over its channel dimension (``reduce``) to the map drift is measured on, and shown as
    its absolute value at the probes' size.

    Args:
        captum_cls: a class from ``captum.attr`` (e.g. ``captum.attr.FeatureAblation``, ``captum.attr.KernelShap``,
            ``captum.attr.LayerGradCam``).
        name: the method's name in tags (``xai/<name>/...``); default: the class name in snake case.
        layer: for ``Layer*`` classes, a dotted module name or the module; None: Grad-CAM's automatic layer.
        reduce: ``"sum"`` (signed sum over channels) or ``"abs_max"`` (largest magnitude).
        passes_per_probe: the method's cost, for the docs and budgets (e.g. ``n_samples`` for sampling methods).
        seed: seed of the random draws inside the call (the same every evaluation; the training RNG untouched).
        init_kwargs: more constructor arguments (e.g. ``multiply_by_inputs=False``).
        **attribute_kwargs: passed to ``attribute`` (e.g. ``n_samples=``, ``baselines=``, ``feature_mask=``).
    """

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
        _check_common(name, reduce, passes_per_probe, seed)
        self.captum_cls = captum_cls
        self.first_argument, self.takes_layer = _first_argument(captum_cls)
        self.name = name or snake_case(captum_cls.__name__)
        self.layer = layer
        self.reduce = reduce
        self.passes_per_probe = float(passes_per_probe)
        self.seed = seed
        self.init_kwargs = dict(init_kwargs or {})
        self.attribute_kwargs = attribute_kwargs
        self._model: nn.Module | None = None
        self._layer_module: nn.Module | None = None

    def config(self) -> dict[str, Any]:
        layer = self.layer if self.layer is None or isinstance(self.layer, str) else f"<{type(self.layer).__name__}>"
        kwargs = {k: primitive(v) for k, v in sorted({**self.init_kwargs, **self.attribute_kwargs}.items())}
        return {
            "captum": self.captum_cls.__qualname__,
            "layer": layer,
            "reduce": self.reduce,
            "seed": self.seed,
            **kwargs,
        }

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:
        self._model = model
        if self.takes_layer:
            if self.layer is None:
                chosen = auto_gradcam_layer(trace_modules(model, forward, example), model)
                if chosen is None:
                    raise ValueError(
                        f"`methods` includes {self.name!r} ({self.captum_cls.__name__}) but no layer was "
                        "given and the model has no spatial feature map; pass `layer=`."
                    )
                self._layer_module = dict(model.named_modules())[chosen]
            else:
                _, self._layer_module = resolve_module(model, self.layer)

    def _instance(self, forward: ForwardFn) -> Any:
        if self.first_argument == "model":
            if self._model is None:
                raise RuntimeError(f"{self.captum_cls.__name__} hooks the model: setup() must run before explain().")
            first: Any = ForwardModule(self._model, forward)
        else:
            first = forward
        if self.takes_layer:
            if self._layer_module is None:
                raise RuntimeError(f"{self.captum_cls.__name__} needs a layer: setup() must run before explain().")
            return self.captum_cls(first, self._layer_module, **self.init_kwargs)
        return self.captum_cls(first, **self.init_kwargs)

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        with seeded_rng(self.seed, inputs.device), quiet_captum():
            result = self._instance(forward).attribute(inputs, target=targets, **self.attribute_kwargs)
        attribution = result[0] if isinstance(result, tuple) else result
        raw = reduce_channels(attribution, self.reduce)
        return Explanation(raw=raw, display=to_display(raw, tuple(inputs.shape[-2:])))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = state["_layer_module"] = None
        return state


class FunctionExplainer(Explainer):
    """Your own attribution function as a method: ``fn(forward, inputs, targets)`` returns a ``(P, C, H, W)`` or
    ``(P, h, w)`` attribution of ``forward(inputs)[i, targets[i]]`` for every probe ``i``. It runs with gradients
    enabled, the model in eval mode and frozen (differentiate with respect to ``inputs`` only), and RNG streams
    seeded with ``seed`` and restored afterwards.

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
        _check_common(name, reduce, passes_per_probe, seed)
        self.fn = fn
        self.name = name or snake_case(getattr(fn, "__name__", type(fn).__name__)).strip("_<>") or "function"
        self.reduce = reduce
        self.passes_per_probe = float(passes_per_probe)
        self.seed = seed

    def config(self) -> dict[str, Any]:
        return {"function": primitive(self.fn), "reduce": self.reduce, "seed": self.seed}

    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        with seeded_rng(self.seed, inputs.device):
            attribution = self.fn(forward, inputs, targets)
        if not isinstance(attribution, Tensor) or attribution.ndim not in (3, 4) or len(attribution) != len(inputs):
            got = tuple(attribution.shape) if isinstance(attribution, Tensor) else type(attribution).__name__
            raise ValueError(
                f"{self.name}: the function must return a (P, C, H, W) or (P, h, w) tensor with "
                f"P={len(inputs)}, got {got}."
            )
        raw = reduce_channels(attribution.to(torch.float32), self.reduce)
        return Explanation(raw=raw, display=to_display(raw, tuple(inputs.shape[-2:])))
