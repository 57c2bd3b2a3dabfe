"""What the monitor costs, said once to the user (an info line at the first evaluation of a fit) and kept within
``max_overhead``; and the one controller of what each method may spend per call (IG's steps, search time, batch).
The cost is all of it: the evaluation on the training thread, the pictures the background thread encodes (its CPU
time) and the setup dry run."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from lightning_xai import _warn
from lightning_xai.explain import Explainer, IntegratedGradients
from lightning_xai.explain.integrated_gradients import fewer_steps

#: without a budget, warn when an evaluation takes more than this share of the time between two evaluations ...
WARN_SHARE = 0.25
#: ... and at least this many seconds (a small run's tenth of a second needs no action)
WARN_SECONDS = 1.0


class CostReporter:
    """Measures the wall time between the ends of two evaluations and the monitor's share of it, and keeps its
    cumulative cost within ``max_overhead`` of the rest: an evaluation over that share cuts IG's steps in proportion
    (never below 8); an evaluation whose predicted cost (the last one's) would take the total over it is skipped
    (``xai/skipped``), so an expensive first evaluation is paid back by later skips. :meth:`limits` hands each
    method its per-call limits: the step caps, the time the search may take, the training batch size."""

    def __init__(self, max_overhead: float | None = None, explainers: Sequence[Explainer] = ()) -> None:
        self.explainers, self.max_overhead = explainers, max_overhead
        self.last_end: float | None = None
        self.reported = False
        #: cumulative seconds of the monitor (evaluations, dry run) and of everything else (training, validation)
        self.explained, self.other, self.last_seconds = 0.0, 0.0, 0.0
        self.skipped = 0  # evaluations the budget skipped
        self.step_caps: dict[str, int] = {}  # IG's steps at most, per method (cut by ``max_overhead``)
        self.search_seconds: float | None = None  # IG's search stops here: the time since the last evaluation
        self.max_batch: int | None = None  # samples per pass at most: the training batch size
        self.step_change: str | None = None  # what the last cut of IG's steps was, until taken
        self._just_cut = False  # the next evaluation runs (to measure the cheaper cost) and is not compared
        self._began: float | None = None  # when the current evaluation began (set by :meth:`allows`)
        self._background_seen = 0.0  # the background writer's CPU seconds already charged
        self.last_background = 0.0  # ... and those charged to the last stamped evaluation
        self._setup_charged: Any = None  # the dry-run report already charged

    @staticmethod
    def share(seconds: float, interval: float) -> float:
        return seconds / interval if interval > 0 else 0.0

    def start(self, setup: Any = None, max_batch: int | None = None) -> None:
        """A fit's clock starts (a new account); ``setup`` (the last ``DryRunReport``) is charged to it, once;
        ``max_batch`` (the training batch size) caps IG's passes from now on."""
        self.last_end, self.explained, self.other, self.last_seconds = time.perf_counter(), 0.0, 0.0, 0.0
        self.max_batch = max_batch
        if setup is not None and setup is not self._setup_charged:
            self._setup_charged, self.explained = setup, float(setup.seconds)

    def limits(self) -> dict[str, dict[str, Any]]:
        """Each method's limits for the coming evaluation, as ``explain`` keywords (``explain_probes(limits=)``): its
        step cap, the search time and, unless it sets its own ``internal_batch_size``, the training batch size."""
        limits = {}
        for e in self.explainers:
            batch = self.max_batch if getattr(e, "internal_batch_size", None) is None else None
            given = {"max_steps": self.step_caps.get(e.name), "max_batch": batch, "search_seconds": self.search_seconds}
            limits[e.name] = {k: v for k, v in given.items() if v is not None}
        return limits

    def allows(self, warn_once: Any, broadcast: Callable[[bool], Any] | None = None) -> bool:
        """Whether the next evaluation (predicted: the last one's cost) keeps the monitor within ``max_overhead`` of
        the rest of the run (rank 0's decision with ``broadcast``). Also caps IG's automatic step search of the
        coming evaluation at the time since the last one (``search_seconds``)."""
        self._began = now = time.perf_counter()
        since = self.search_seconds = None if self.last_end is None else max(0.0, now - self.last_end)
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
            f"AttributionMonitor: `Budget(max_overhead={self.max_overhead})` skips evaluations: the monitor took "
            f"{self.explained:.1f} s against {other:.1f} s of the rest of the run. Evaluations resume when the "
            "budget allows; `xai/skipped` counts the skipped ones.",
        )
        return False

    def stamped(self, record: Any, writer: Any = None, fitting: bool = True) -> Any:
        """``record`` with its ``cost_seconds``: the time since :meth:`allows` (at least its explanations' time) plus
        the background ``writer``'s CPU time since the last stamp (rank 0, before the record is broadcast)."""
        began, self._began = (self._began if fitting else None), None  # validate/test: no :meth:`allows` before
        wall = record.explain_seconds if began is None else max(record.explain_seconds, time.perf_counter() - began)
        busy = float(getattr(writer, "busy_seconds", 0.0))
        seen = self._background_seen if busy >= self._background_seen else 0.0  # a new writer (ddp_spawn) starts at 0
        self.last_background, self._background_seen = busy - seen, busy
        record.cost_seconds = wall + self.last_background
        return record

    def take_step_change(self) -> str | None:
        """What the budget changed in IG's steps since the last call, or None."""
        change, self.step_change = self.step_change, None
        return change

    def cut_steps(self, factor: float) -> dict[str, int]:
        """Cap each IG's steps at about ``factor`` × its last ones (:func:`fewer_steps`): the new caps (none at the
        floor). ``n_steps`` (the state key) stays."""
        cuts = {}
        for e in self.explainers:
            if isinstance(e, IntegratedGradients):
                current = e.current_steps or e.max_steps
                if cap := fewer_steps(min(current, self.step_caps.get(e.name, current)), factor):
                    cuts[e.name] = cap
        if cuts:
            self.step_caps.update(cuts)
            self._just_cut = True
            self.step_change = "max_overhead cut IG's steps: " + ", ".join(f"{n} to {c}" for n, c in cuts.items())
        return cuts

    def after_evaluation(
        self, record: Any, warn_once: Any, max_seconds_per_epoch: float | None = None, fitting: bool = True
    ) -> None:
        """Account for an evaluation (on every rank, with rank 0's record); only those of a fit count."""
        explain, scalars = record.explain_seconds, record.scalars
        seconds = record.cost_seconds or explain  # rank 0's whole evaluation (:meth:`stamped`), else its explanations
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
            if seconds > wanted and (cuts := self.cut_steps(wanted / seconds)):
                warn_once(
                    "budget_steps",
                    f"AttributionMonitor: `Budget(max_overhead={self.max_overhead})`: an evaluation took more than "
                    "that share of the time since the previous one, so Integrated Gradients runs with fewer steps ("
                    + ", ".join(f"{name}: at most {cap}" for name, cap in cuts.items())
                    + "); `xai/<method>/n_steps` shows the steps used.",
                )
        if not self.reported:
            self.reported = True
            rank_zero_info(self.summary(seconds, explain, share, interval, self.explainers, scalars))
        unbounded = max_seconds_per_epoch is None and self.max_overhead is None
        if unbounded and share > WARN_SHARE and seconds >= WARN_SECONDS:
            warn_once(
                "cost_share",
                f"AttributionMonitor: the monitor takes {seconds:.2f} s per evaluation, {share:.0%} of the time "
                f"between two evaluations ({interval:.1f} s). Set a budget (`budget=Budget(max_overhead=0.05)`: "
                "a share of the run), evaluate less often (`every_n_epochs=`) or explain fewer probes or IG steps.",
            )

    def summary(
        self, seconds: float, explain: float, share: float, interval: float, explainers: Sequence[Any], scalars: Any
    ) -> str:
        """The first evaluation's info line: its cost (``interval``: the time since the fit's training started), split
        into the explanations' passes and everything else."""
        parts = []
        for e in explainers:  # each method: its layer (and cells), steps and seconds
            detail = ""
            if getattr(e, "layer_name", None):
                cells = getattr(e, "cells", None)
                detail = f" on `{e.layer_name}`" + (f" ({cells[0]}x{cells[1]} cells)" if cells else "")
            if (steps := scalars.get(f"xai/{e.name}/n_steps")) is not None:
                detail += f" with {_warn.count(int(steps), 'step')}"
            if (method_seconds := scalars.get(f"xai/{e.name}/seconds")) is not None:
                detail += f" ({method_seconds:.2f} s)"
            parts.append(e.name + detail)
        shared = explain - sum(scalars.get(f"xai/{e.name}/seconds", 0.0) for e in explainers)
        if shared >= 0.005:  # what no method owns: the prediction pass, moving probes, guarding the training state
            parts.append(f"the shared prediction pass ({shared:.2f} s)")
        rest = max(0.0, seconds - explain)
        background = f"; {self.last_background:.2f} s of it in the background" if self.last_background >= 0.005 else ""
        since = f"{interval:.{1 if interval >= 0.1 else 2}f} s"  # a tiny epoch: not "0.0 s"
        return (
            f"AttributionMonitor: an evaluation takes {seconds:.2f} s, {share:.0%} of the time since training started "
            f"({since}): {explain:.2f} s of explanation passes ({', '.join(parts)}) and "
            f"{rest:.2f} s for everything else (drift, alerts, pictures{background}). Fewer probes, IG steps or "
            "evaluations (`every_n_epochs=`) make it cheaper, `Budget(max_overhead=)` caps it; each evaluation's is "
            "`xai/seconds` (logged, and in `monitor.history[i].scalars` with or without a logger)."
        )
