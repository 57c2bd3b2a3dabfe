"""What the monitor costs, said to the user and kept within a budget.

Said once, as one info line at the first evaluation of a fit: the seconds per evaluation and their share of the time
since the previous one, split into the explanations' passes (per method, with IG's steps and the Grad-CAM layer) and
everything else (drift, alerts, pictures), and which settings change each. A warning comes only when the user should
act: no budget is set and an evaluation takes more than :data:`WARN_SHARE` of the time between two evaluations and
at least :data:`WARN_SECONDS`.
``max_overhead`` keeps the monitor's cumulative cost within that fraction of the rest of the run's time (fewer IG
steps first, then fewer evaluations). The cost is all of it: the evaluation on the training thread (explanations,
drift, alerts, preparing the pictures), the pictures composed and encoded on the background thread (its CPU time)
and the setup dry run."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

#: share of the time between two evaluations above which the monitor warns (when no budget is set) ...
WARN_SHARE = 0.25
#: ... if an evaluation also takes at least this many seconds (a small run's tenth of a second needs no action)
WARN_SECONDS = 1.0


class CostReporter:
    """Measures the wall time between the ends of two evaluations (training, validation and the evaluation), the
    monitor's share of it, and keeps its cumulative cost within ``max_overhead`` of the rest.

    The budget acts in two steps. After an evaluation that took more than ``max_overhead`` of the time since the
    previous one, Integrated Gradients gets fewer steps, in proportion (never below 8). Before an evaluation, if
    its predicted cost (the last one's) would take the monitor's total over ``max_overhead`` × the rest of the
    run's time so far, the evaluation is skipped (``xai/skipped`` counts them); the account is cumulative, so an
    expensive first evaluation is paid back by later skips.

    Example::

        >>> reporter = CostReporter()
        >>> reporter.share(2.0, interval=40.0)
        0.05
        >>> budget = CostReporter(max_overhead=0.05)
        >>> budget.explained, budget.other, budget.last_seconds, budget.last_end = 3.0, 40.0, 1.0, float("inf")
        >>> budget.allows(lambda key, message: None)  # 3 + 1 s of the monitor for 40 s of training: over 5 %
        False
    """

    def __init__(self, max_overhead: float | None = None, explainers: Sequence[Any] = ()) -> None:
        self.explainers = explainers
        self.last_end: float | None = None
        self.reported = False
        self.max_overhead = max_overhead
        #: cumulative seconds of the monitor (evaluations, dry run) and of everything else (training, validation)
        self.explained, self.other = 0.0, 0.0
        self.last_seconds = 0.0
        #: evaluations the budget skipped
        self.skipped = 0
        #: IG's steps were just cut: the next evaluation runs (to measure the cheaper cost) and is not compared
        self.step_change: str | None = None
        self._just_cut = False
        self._began: float | None = None  # when the current evaluation began (set by :meth:`allows`)
        self._background_seen = 0.0  # the background writer's CPU seconds already charged
        #: the background writer's CPU seconds charged to the last stamped evaluation
        self.last_background = 0.0
        self._setup_charged: Any = None  # the dry-run report already charged

    @staticmethod
    def share(seconds: float, interval: float) -> float:
        return seconds / interval if interval > 0 else 0.0

    def start(self, setup: Any = None) -> None:
        """The run's clock starts (training begins); a resumed or repeated fit starts a new account. ``setup``: the
        monitor's last dry run (``DryRunReport``), charged to the fit that follows it (once)."""
        self.last_end, self.explained, self.other, self.last_seconds = time.perf_counter(), 0.0, 0.0, 0.0
        if setup is not None and setup is not self._setup_charged:
            self._setup_charged, self.explained = setup, float(setup.seconds)

    def allows(self, warn_once: Any, broadcast: Callable[[bool], Any] | None = None) -> bool:
        """Whether the next evaluation fits ``max_overhead``: its predicted cost (the last evaluation's) plus what
        the monitor already took stays within ``max_overhead`` × the rest of the run's time so far. With
        ``broadcast`` (the strategy's, from rank 0) every rank follows rank 0's decision and counts the same skips.
        Also caps every automatic IG step search of the coming evaluation at the time since the last one
        (``search_seconds``): a search never costs more than the training it follows."""
        self._began = now = time.perf_counter()
        since = None if self.last_end is None else max(0.0, now - self.last_end)
        for explainer in self.explainers:
            if hasattr(explainer, "search_seconds"):
                explainer.search_seconds = since
        other = self.other + (since or 0.0)
        free = self.max_overhead is None or since is None or self.last_seconds == 0.0 or self._just_cut
        self._just_cut = False
        ok = free or self.explained + self.last_seconds <= (self.max_overhead or 0.0) * other
        if broadcast is not None:
            ok = bool(broadcast(ok))
        if ok:
            return True
        self.skipped, self._began = self.skipped + 1, None  # no evaluation: nothing to stamp
        warn_once(
            "budget_skip",
            f"AttributionMonitor: `max_overhead={self.max_overhead}` skips evaluations: the monitor took "
            f"{self.explained:.1f} s against {other:.1f} s of the rest of the run. Evaluations resume when the "
            "budget allows; `xai/skipped` counts the skipped ones.",
        )
        return False

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
            seconds = scalars.get(f"xai/{e.name}/seconds")
            if seconds is not None:
                detail += f" ({seconds:.2f} s)"
            parts.append(e.name + detail)
        return ", ".join(parts)

    def stamped(self, record: Any, writer: Any = None, fitting: bool = True) -> Any:
        """``record`` (an ``Evaluation``) with its ``cost_seconds``: the time since the evaluation began (at
        :meth:`allows`; at least its explanations' time) plus the CPU time the background ``writer`` spent
        rendering since the last stamp. Rank 0 stamps the record before it is broadcast, so every rank's budget
        decides on the same figures."""
        began, self._began = (self._began if fitting else None), None  # validate/test: no :meth:`allows` before
        wall = record.explain_seconds if began is None else max(record.explain_seconds, time.perf_counter() - began)
        busy = float(getattr(writer, "busy_seconds", 0.0))
        seen = self._background_seen if busy >= self._background_seen else 0.0  # a new writer (ddp_spawn) starts at 0
        rendered, self._background_seen = busy - seen, busy
        self.last_background = rendered
        record.cost_seconds = wall + rendered
        return record

    def take_step_change(self) -> str | None:
        """What the budget changed in IG's steps since the last call (said once), or None."""
        change, self.step_change = self.step_change, None
        return change

    def after_evaluation(
        self, record: Any, warn_once: Any, max_seconds_per_epoch: float | None = None, fitting: bool = True
    ) -> None:
        """Call at the end of every evaluation, on every rank, with its record (``cost_seconds``, ``scalars``,
        rank 0's), how to warn (``warn_once(key, message)``) and the per-evaluation budget. Only evaluations of a
        fit count (``validate``/``test`` have no training to compare with)."""
        explain, scalars, explainers = record.explain_seconds, record.scalars, self.explainers
        seconds = record.cost_seconds or explain  # rank 0's whole evaluation (:meth:`stamped`), else its explanations
        budget = max_seconds_per_epoch
        now = time.perf_counter()
        last, self.last_end = self.last_end, now
        if last is None or not fitting:
            return
        interval = now - last
        share = self.share(seconds, interval)
        self.explained += seconds
        self.other += max(interval - seconds, 0.0)  # the background rendering overlaps training: never below 0
        self.last_seconds = seconds
        if self.max_overhead is not None:
            scalars["xai/skipped"] = float(self.skipped)
            wanted = self.max_overhead * max(interval - seconds, 0.0)  # what this evaluation could have cost
            if seconds > wanted:
                self._reduce_ig(explainers, wanted / seconds if seconds > 0 else 1.0, warn_once)
        if not self.reported:
            self.reported = True
            rank_zero_info(self.summary(seconds, explain, share, interval, explainers, scalars))
        if budget is None and self.max_overhead is None and share > WARN_SHARE and seconds >= WARN_SECONDS:
            warn_once(
                "cost_share",
                f"AttributionMonitor: the monitor takes {seconds:.2f} s per evaluation, {share:.0%} of the time "
                f"between two evaluations ({interval:.1f} s). Set a budget (`max_overhead=0.05`: a share of the run), "
                "evaluate less often (`every_n_epochs=`) or explain fewer probes or IG steps.",
            )

    def summary(
        self, seconds: float, explain: float, share: float, interval: float, explainers: Sequence[Any], scalars: Any
    ) -> str:
        """The first evaluation's info line: its cost, split into the explanations' passes and everything else.

        Example::

            >>> CostReporter().summary(2.0, 1.5, 0.2, 10.0, [], {})  # doctest: +NORMALIZE_WHITESPACE
            'AttributionMonitor: an evaluation takes 2.00 s, 20% of the time since the previous one (10.0 s):
             1.50 s of explanation passes () and 0.50 s for everything else (drift, alerts, pictures). Fewer probes,
             IG steps or evaluations (`every_n_epochs=`) make it cheaper, `max_overhead=` caps it; logged as
             `xai/seconds`.'
        """
        rest = max(0.0, seconds - explain)
        background = f"; {self.last_background:.2f} s of it in the background" if self.last_background >= 0.005 else ""
        return (
            f"AttributionMonitor: an evaluation takes {seconds:.2f} s, {share:.0%} of the time since the previous one "
            f"({interval:.1f} s): {explain:.2f} s of explanation passes ({self.describe(explainers, scalars)}) and "
            f"{rest:.2f} s for everything else (drift, alerts, pictures{background}). Fewer probes, IG steps or "
            "evaluations (`every_n_epochs=`) make it cheaper, `max_overhead=` caps it; logged as `xai/seconds`."
        )

    def _reduce_ig(self, explainers: Sequence[Any], factor: float, warn_once: Any) -> None:
        """Over the budget: fewer IG steps, about ``factor`` of the last ones, for every method that can (said
        once)."""
        caps = [(e.name, cap) for e in explainers if hasattr(e, "reduce_steps") and (cap := e.reduce_steps(factor))]
        if caps:
            self._just_cut = True
            self.step_change = "max_overhead cut IG's steps: " + ", ".join(f"{n} to {c}" for n, c in caps)
            warn_once(
                "budget_steps",
                f"AttributionMonitor: `max_overhead={self.max_overhead}`: an evaluation took more than that share of "
                "the time since the previous one, so Integrated Gradients runs with fewer steps ("
                + ", ".join(f"{name}: at most {cap}" for name, cap in caps)
                + "); `xai/<method>/n_steps` shows the steps used.",
            )
