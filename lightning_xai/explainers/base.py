"""The interface every attribution method implements.

An :class:`Explainer` turns a batch of probes and their targets into an :class:`Explanation`: the raw map that
drift is measured on, a non-negative map at input resolution for display and localisation, and per-probe
diagnostics (e.g. the Integrated Gradients completeness gap). All methods run batched, on the model's device,
in whatever grad/eval context the caller set up (see :func:`lightning_xai.guard.training_state_guard`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

ForwardFn = Callable[[Tensor], Tensor]


@dataclass
class Explanation:
    """One method's result for all probes.

    Attributes:
        raw: ``(P, h, w)`` float32 attribution map drift is measured on (signs kept; drift uses ``|raw|``).
        display: ``(P, H, W)`` float32, non-negative, at the input's resolution: what is drawn and localised.
        diagnostics: per-probe ``(P,)`` tensors, e.g. ``{"completeness_gap": ...}``.
    """

    raw: Tensor
    display: Tensor
    diagnostics: dict[str, Tensor] = field(default_factory=dict)


class Explainer(ABC):
    """Interface of an attribution method used by :class:`~lightning_xai.AttributionMonitor`."""

    #: name used in TensorBoard tags (``xai/<name>/...``) and in ``methods=``
    name: str = ""
    #: forward(+backward) passes per probe, for the cost model and budgets
    passes_per_probe: float = 1.0
    #: how ``display`` maps are scaled to [0, 1] per image: "max" or "percentile" (robust to a few hot pixels)
    display_normalization: str = "max"
    #: ``explain`` accepts ``max_seconds=`` and scales its work down to fit (the monitor's time budget)
    supports_time_budget: bool = False

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:  # noqa: B027
        """Validate against the model before training starts (``example`` is one probe, batch of 1)."""

    @abstractmethod
    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        """Attribute ``forward(inputs)[i, targets[i]]`` for every probe ``i``.

        Methods with ``supports_time_budget = True`` also accept a keyword ``max_seconds: float`` (the time left
        in the monitor's ``max_seconds_per_epoch``) and add ``budget_limited`` to ``diagnostics``."""
