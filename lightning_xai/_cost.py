"""What the monitor costs, said to the user: one info line after the first measured interval between two
evaluations (seconds per evaluation, share of the time between evaluations, methods and steps, the Grad-CAM
layer), and one warning when the explanations take more than 10 % of that time without a time budget."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

#: share of the time between two evaluations above which the monitor warns (when no budget is set)
WARN_SHARE = 0.10


class CostReporter:
    """Measures the wall time between the ends of two evaluations (training, validation and the explanations)
    and the explanations' share of it.

    Example::

        >>> reporter = CostReporter()
        >>> reporter.share(2.0, interval=40.0)
        0.05
    """

    def __init__(self) -> None:
        self.last_end: float | None = None
        self.reported = False

    @staticmethod
    def share(seconds: float, interval: float) -> float:
        return seconds / interval if interval > 0 else 0.0

    def describe(self, explainers: Sequence[Any], scalars: dict[str, float]) -> str:
        parts = []
        for e in explainers:
            detail = ""
            if getattr(e, "layer_name", None):
                cells = getattr(e, "cells", None)
                detail = f" on `{e.layer_name}`" + (f" ({cells[0]}x{cells[1]} cells)" if cells else "")
            steps = scalars.get(f"xai/{e.name}/n_steps")
            if steps is not None:
                detail += f" with {int(steps)} steps"
            parts.append(e.name + detail)
        return ", ".join(parts)

    def after_evaluation(self, record: Any, monitor: Any) -> None:
        """Call at the end of every evaluation with its record (``explain_seconds``, ``scalars``) and the monitor
        (its ``explainers``, ``max_seconds_per_epoch`` and ``_warn_once``)."""
        seconds, scalars, explainers = record.explain_seconds, record.scalars, monitor.explainers
        budget, warn_once = monitor.max_seconds_per_epoch, monitor._warn_once
        now = time.perf_counter()
        last, self.last_end = self.last_end, now
        if last is None:
            return
        interval = now - last
        share = self.share(seconds, interval)
        if not self.reported:
            self.reported = True
            rank_zero_info(
                f"AttributionMonitor: an evaluation takes {seconds:.2f} s, {share:.0%} of the time between two "
                f"evaluations ({interval:.1f} s); methods: {self.describe(explainers, scalars)}. "
                "Logged per evaluation as `xai/seconds`."
            )
        if budget is None and share > WARN_SHARE:
            warn_once(
                "cost_share",
                f"AttributionMonitor: the explanations take {seconds:.2f} s, {share:.0%} of the time between two "
                f"evaluations ({interval:.1f} s). Evaluate less often (`every_n_epochs=`), use fewer probes "
                "(`num_probes=`) or IG steps (`ig_steps=`), or set a budget with `max_seconds_per_epoch=`.",
            )
