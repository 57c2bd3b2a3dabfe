"""The interface every attribution method implements.

An :class:`Explainer` turns a batch of probes and their targets into an :class:`Explanation`: the raw map that
drift is measured on, a non-negative map at input resolution for display and localisation, and per-probe
diagnostics (e.g. the Integrated Gradients completeness gap). All methods run batched, on the model's device,
in whatever grad/eval context the caller set up (see :func:`lightning_xai.explain.guard.training_state_guard`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

ForwardFn = Callable[[Tensor], Tensor]

#: What the monitor can hand an explainer beyond ``(forward, inputs, targets)``, when it lists the keyword in
#: :attr:`Explainer.explain_keywords`:
#:
#: * ``outputs``: ``forward(inputs)`` from the prediction pass all methods share (no grad), so a method that
#:   needs the model's outputs on the probes does not run that forward again;
#: * ``max_seconds``: the time left in the monitor's ``max_seconds_per_epoch``; the method scales its work down
#:   to fit and adds ``budget_limited`` (1 when it did) to its diagnostics.
EXPLAIN_KEYWORDS = frozenset({"outputs", "max_seconds"})


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
    #: optional keywords ``explain`` accepts, from :data:`EXPLAIN_KEYWORDS`; the monitor passes exactly these
    explain_keywords: frozenset[str] = frozenset()

    def config(self) -> dict[str, Any]:
        """The settings that change this method's maps (layer, steps, baseline, ...), as short primitives.

        A checkpoint's monitor state is restored only into a monitor whose methods describe themselves the same
        way, so the stored reference maps are never compared with maps made differently. Presentation-only
        settings do not belong here."""
        return {}

    def setup(self, model: nn.Module, forward: ForwardFn, example: Tensor) -> None:  # noqa: B027
        """Validate against the model before training starts (``example`` is one probe, batch of 1)."""

    @abstractmethod
    def explain(self, forward: ForwardFn, inputs: Tensor, targets: Tensor) -> Explanation:
        """Attribute ``forward(inputs)[i, targets[i]]`` for every probe ``i``.

        A method may also accept the keywords listed in its ``explain_keywords`` (see :data:`EXPLAIN_KEYWORDS`)."""
