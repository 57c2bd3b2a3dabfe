"""Replay alert detectors offline on the recorded maps: compare candidates in seconds, without retraining.

A detector is a callable ``detector(maps_by_epoch, epochs) -> [(epoch, method), ...]``: ``maps_by_epoch[i]`` maps a
method name to its raw ``(P, h, w)`` attribution maps at evaluation ``epochs[i]`` (exactly what the monitor's drift
tracker saw), and the result lists the alerts it would raise. A detector may also have a ``watched(maps_by_epoch,
epochs)`` method returning, per evaluation, ``{method: (value, threshold)}``: the report then shows its margins.

Example (the old fixed rule, recomputed from the maps; ``--check`` compares its alerts with the live ones)::

    python benchmarks/alert_truth/replay.py --check
    python benchmarks/alert_truth/replay.py --detector my_module:my_detector --markdown replay.md
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import importlib
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from benchmarks.alert_truth.analysis import DEFAULT_OUT, Alert, Watched, live_alerts, load_records
from benchmarks.alert_truth.report import report
from lightning_xai.functional import spearman_distance

MapsByEpoch = list[dict[str, Tensor]]
Detector = Callable[[MapsByEpoch, list[int]], list[tuple[int, str]]]


def maps_by_epoch(record: dict[str, Any]) -> tuple[MapsByEpoch, list[int]]:
    """The recorded maps of every evaluation and their epochs."""
    evals = [e for e in record["evaluations"] if e.get("evaluated", True)]
    maps = [dict(e["maps"]) for e in evals]
    if int(record.get("format_version", 1)) < 2:  # colour parts recorded as (1 - share, share): per degree of freedom
        channels = int(record["probes"]["images"].shape[1])
        for by_key in maps:
            for key in [k for k in by_key if k.endswith("/colour")]:
                parts = by_key[key]
                by_key[key] = torch.stack([parts[..., 0], parts[..., 1] / (channels - 1)], dim=-1)
    return maps, [int(e["epoch"]) for e in evals]


class FixedRankRule:
    """Today's default rule recomputed from the maps: median over probes of ``spearman_distance`` (1 - Spearman rho
    of ``|A|``) against the reference maps (the first evaluation at or after ``warmup_epochs``, i.e. epoch 2),
    alert when ``>= threshold``; one alert per event (re-armed below the threshold), ``cooldown`` silent
    evaluations after an alert, ``patience`` consecutive evaluations needed (as ``DriftRule()``)."""

    def __init__(self, threshold: float = 0.4, warmup_epochs: int = 2, patience: int = 1, cooldown: int = 3) -> None:
        self.threshold, self.warmup_epochs = threshold, warmup_epochs
        self.patience, self.cooldown = patience, cooldown

    def values(self, maps: MapsByEpoch, epochs: list[int]) -> list[dict[str, float]]:
        """Per evaluation, the watched value of each method (absent before and at the reference)."""
        reference: dict[str, tuple[int, Tensor]] = {}
        out: list[dict[str, float]] = []
        for epoch, by_method in zip(epochs, maps, strict=True):
            row: dict[str, float] = {}
            for method, current in by_method.items():
                ref = reference.get(method)
                if ref is None or ref[1].shape != current.shape:
                    if epoch >= self.warmup_epochs:
                        reference[method] = (epoch, current)
                    continue
                per_probe = spearman_distance(current.float(), ref[1].float())
                row[method] = float(torch.quantile(per_probe.double(), 0.5).float())  # as the tracker's median
            out.append(row)
        return out

    def watched(self, maps: MapsByEpoch, epochs: list[int]) -> list[Watched]:
        return [{m: (v, self.threshold) for m, v in row.items()} for row in self.values(maps, epochs)]

    def __call__(self, maps: MapsByEpoch, epochs: list[int]) -> list[tuple[int, str]]:
        alerts: list[tuple[int, str]] = []
        state: dict[str, list[Any]] = {}  # method -> [streak, cooldown_left, firing]
        for epoch, row in zip(epochs, self.values(maps, epochs), strict=True):
            for method, value in row.items():
                s = state.setdefault(method, [0, 0, False])
                over = value >= self.threshold
                s[0] = s[0] + 1 if over else 0
                if not over:
                    s[2] = False
                if over and s[0] >= self.patience and not s[2] and s[1] == 0:
                    s[2] = True
                    s[1] = self.cooldown + 1
                    alerts.append((epoch, method))
                if s[1] > 0:
                    s[1] -= 1
        return alerts


class ShiftDetectorReplay:
    """The new default detector, ``lightning_xai.drift.detector.ShiftDetector`` (where the installed code has it),
    fed the recorded maps as the monitor feeds it (armed from ``warmup_epochs`` on). Its region needs the input
    size, which does not change whether it fires; ``input_size`` is only passed through.

    ``python benchmarks/alert_truth/replay.py --detector benchmarks.alert_truth.replay:ShiftDetectorReplay``
    """

    def __init__(
        self, warmup_epochs: int = 2, input_size: tuple[int, int] = (32, 32), colour: bool = True, **kwargs: Any
    ) -> None:
        try:
            from lightning_xai.drift.detector import ShiftDetector  # type: ignore[import-not-found]
        except ImportError as err:  # the code the recordings came from may predate it
            raise ImportError("this lightning_xai has no lightning_xai.drift.detector.ShiftDetector") from err
        self.follow_alpha = float(kwargs.pop("follow_alpha", kwargs.get("alpha", 0.005)))
        self.factory = lambda: ShiftDetector(**kwargs)
        self.warmup_epochs, self.input_size, self.cooldown = warmup_epochs, input_size, 3
        self.colour = colour  # False: leave out the recorded colour parts (the test of what relevance is made of)
        self.kwargs = kwargs
        #: the transplant test of each candidate, on the recorded weights (where the recording has them)
        self.follow = bool(kwargs.get("follow", True))
        self.record: dict[str, Any] | None = None
        self._nets: dict[int, Any] = {}
        #: evaluations (epochs) at which the training setup changed: the monitor pauses the detector there
        self.setup_changes: set[int] = set()
        #: evaluations (epochs) the overhead budget would have skipped (see :func:`budget_skips`)
        self.skipped: set[int] = set()

    #: with ``max_overhead``, the evaluations the monitor's budget would have skipped are left out (see
    #: :func:`budget_skips`); set by ``replay.py --max-overhead``
    max_overhead: float | None = None

    def for_record(self, record: dict[str, Any]) -> ShiftDetectorReplay:
        """A copy that pauses where the monitor's ``SetupWatch`` saw the training setup change in this run: from the
        recorded signature (``setup``) where the recording has it, else from the scenario (``unfreeze`` changes the
        trainable parameters at its change epoch; the other scenarios change none)."""
        size = tuple(int(n) for n in record["probes"]["images"].shape[-2:])
        kwargs = {**self.kwargs, "follow_alpha": self.follow_alpha}
        replay = ShiftDetectorReplay(self.warmup_epochs, (size[0], size[1]), self.colour, **kwargs)
        replay.record = record
        replay.skipped = budget_skips(record, self.max_overhead) if self.max_overhead is not None else set()
        evals = [e for e in record["evaluations"] if e.get("evaluated", True)]
        if all("setup" in e for e in evals):
            replay.setup_changes = {
                int(b["epoch"]) for a, b in zip(evals, evals[1:], strict=False) if a["setup"] != b["setup"]
            }
        elif record["config"].get("scenario") == "unfreeze":
            replay.setup_changes = {int(record["config"]["change_epoch"])}
        return replay

    def _weights(self, epoch: int) -> dict[str, Tensor] | None:
        if self.record is None:
            return None
        return next((e.get("weights") for e in self.record["evaluations"] if int(e["epoch"]) == epoch), None)

    def _net(self, epoch: int) -> Any:
        """The recorded network with its weights of ``epoch`` (None where the recording has none)."""
        if epoch not in self._nets:
            weights, net = self._weights(epoch), None
            if weights is not None and self.record is not None:
                from benchmarks.alert_truth.models import build

                config = self.record["config"]
                net = build(config["model"], config["cue"])
                net.load_state_dict(weights)
                net.eval()
            self._nets[epoch] = net
        return self._nets[epoch]

    def verifier(self, epoch: int, colour: bool = False) -> Any:
        """``verify(regions, ignored, origin_epoch)`` for the candidates of ``epoch``, as the monitor's ``FollowCheck``
        makes it: the recorded network at ``epoch`` against its weights at the drift reference (the warm-up's end), on
        the recorded probes (labels as targets); None without a recording or its weights."""
        if not self.follow or self.record is None or self._weights(epoch) is None:
            return None
        from lightning_xai._follow import donor_groups
        from lightning_xai.explain.behaviour import follow_test

        probes, alpha, reference = self.record["probes"], self.follow_alpha, self.warmup_epochs
        images, labels = probes["images"], probes["labels"]

        def verify(regions: Any, ignored: Any = None, origin_epoch: int = -1) -> Any:
            before = self._weights(reference)
            if before is None or epoch <= reference:
                return None
            state = {k: v.float() for k, v in before.items() if v.is_floating_point()}
            found = (self._net(epoch), state, reference, images, labels, donor_groups(regions, labels))
            return follow_test(*found, alpha=alpha, colour=colour, ignored=ignored)

        return verify

    def _run(self, maps: MapsByEpoch, epochs: list[int]) -> tuple[list[tuple[int, str]], list[Watched]]:
        detector = self.factory()
        labels = None if self.record is None else self.record["probes"]["labels"]
        self.follows: list[tuple[int, str, Any]] = []  # (epoch, method, FollowTest) of every test that ran
        alerts: list[tuple[int, str]] = []
        watched: list[Watched] = []
        quiet: dict[str, int] = {}  # as the AlertTracker: an alert silences its method (both tests) for `cooldown`
        for epoch, by_method in zip(epochs, maps, strict=True):
            row: Watched = {}
            if epoch in self.skipped:
                watched.append(row)
                continue
            for key, current in by_method.items():  # as the monitor: every method's maps before any alert
                if not key.endswith("/colour") and hasattr(detector, "remember"):
                    detector.remember(key, epoch, current)
            for key, current in by_method.items():  # "<method>" (where), then "<method>/colour" (what)
                if key.endswith("/colour") and not self.colour:
                    continue
                armed = epoch >= self.warmup_epochs and epoch not in self.setup_changes
                size = (1, 2) if key.endswith("/colour") else self.input_size  # as the monitor feeds the parts
                spatial = not key.endswith("/colour")
                verify = self.verifier(epoch, not spatial) if epoch > self.warmup_epochs else None  # reference kept
                extra = {"classes": labels, "verify": verify} if self.follow else {}
                d = detector.update(key, current, size, armed, epoch=epoch, cooldown=self.cooldown, **extra)
                method = key.removesuffix("/colour")
                if d is None:
                    continue
                if getattr(d, "follow", None) is not None:
                    self.follows.append((epoch, key, d.follow))
                fired = bool(getattr(d, "fired", False)) and not quiet.get(method, 0)
                evidence = getattr(d, "evidence", None)
                if fired and key != method and evidence is not None:  # as check_colour: only a rise in colour
                    fired = float(evidence.after[..., 1].mean()) > float(evidence.before[..., 1].mean())
                if key == method and armed:  # the tracker counts an armed evaluation once per method
                    quiet[method] = self.cooldown if fired else max(0, quiet.get(method, 0) - 1)
                elif fired:
                    quiet[method] = self.cooldown
                if fired and hasattr(detector, "silence"):  # as the monitor: the method's other test is silenced
                    detector.silence(f"{method}/colour" if key == method else method, self.cooldown)
                confirmation, value = getattr(d, "confirmation", None), None
                if confirmation is not None:  # the test that decided the alert at this evaluation
                    value = (float(confirmation[0]), float(confirmation[1]))
                elif getattr(d, "threshold", None) is not None and not getattr(d, "candidate", False):
                    value = (float(d.score), float(d.threshold))  # (a candidate's margin is its confirmation's)
                if value is not None and value[1] > 0:  # per method, the test closest to its threshold
                    held = row.get(method)
                    row[method] = value if held is None or value[0] / value[1] > held[0] / held[1] else held
                if fired:
                    alerts.append((epoch, method))
            watched.append(row)
        return alerts, watched

    def __call__(self, maps: MapsByEpoch, epochs: list[int]) -> list[tuple[int, str]]:
        return self._run(maps, epochs)[0]

    def watched(self, maps: MapsByEpoch, epochs: list[int]) -> list[Watched]:
        return self._run(maps, epochs)[1]


def budget_skips(record: dict[str, Any], max_overhead: float) -> set[int]:
    """The epochs whose evaluation ``AttributionMonitor(budget=Budget(max_overhead=...))`` would have skipped in this
    run, by the monitor's rule (``lightning_xai._cost.CostReporter.allows``) on the recorded times: an evaluation runs
    when the monitor's total so far plus the last evaluation's cost stays within ``max_overhead`` × the rest of the
    run's time. Only the skipping is simulated (the budget's first step, fewer IG steps, changes the maps). The cost
    is the recorded ``cost_seconds`` (the whole evaluation) where the recording has it, else ``explain_seconds``
    (recordings made before the budget counted the whole evaluation: a live budget skips at least as many)."""
    evals = record["evaluations"]
    ends = [float(e["epoch_end_time"]) for e in evals]
    costs = [float(e.get("cost_seconds") or e["explain_seconds"]) for e in evals]
    gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    first = statistics.median(gaps) if gaps else 0.0  # the recording has no start time: a typical epoch
    explained = other = last = 0.0
    skipped: set[int] = set()
    for i, e in enumerate(evals):
        other += (first if i == 0 else gaps[i - 1]) - costs[i]  # training and validation before this evaluation
        if explained > 0.0 and explained + last > max_overhead * other:
            skipped.add(int(e["epoch"]))
            continue
        explained, last = explained + costs[i], costs[i]
    return skipped


def replay(records: Sequence[dict[str, Any]], detector: Detector) -> dict[str, tuple[list[Alert], list[Watched]]]:
    """Run ``detector`` on every recorded run: name -> (alerts, watched values per evaluation)."""
    out: dict[str, tuple[list[Alert], list[Watched] | None]] = {}
    for rec in records:
        maps, epochs = maps_by_epoch(rec)
        this = detector.for_record(rec) if hasattr(detector, "for_record") else detector  # per-run settings
        alerts = [(int(a[0]), str(a[1])) for a in this(maps, epochs)]
        watched_fn = getattr(this, "watched", None)
        # without ``watched`` the report shows no margins (rather than the live detector's)
        out[rec["name"]] = (alerts, [{} for _ in epochs] if watched_fn is None else watched_fn(maps, epochs))
    return out


def check_against_live(records: Sequence[dict[str, Any]], replayed: dict[str, tuple[list[Alert], Any]]) -> list[str]:
    """Runs whose replayed alerts differ from the live ones (empty: the recording reproduces the live alerts)."""
    problems = []
    for rec in records:
        live = sorted(live_alerts(rec))
        again = sorted(replayed[rec["name"]][0])
        if live != again:
            problems.append(f"{rec['name']}: live {live} replayed {again}")
    return problems


def load_detector(spec: str) -> Detector:
    """``module:attribute`` (a detector, or a class/factory called without arguments when it is a class)."""
    module_name, _, attr = spec.partition(":")
    obj = getattr(importlib.import_module(module_name), attr or "detector")
    return obj() if isinstance(obj, type) else obj


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the recordings' directory")
    parser.add_argument("--detector", default=None, help="module:callable (default: the old fixed rule)")
    parser.add_argument("--check", action="store_true", help="check that replayed alerts equal the live ones")
    parser.add_argument("--markdown", default=None, help="also write the report as markdown to this file")
    parser.add_argument(
        "--max-overhead",
        type=float,
        default=None,
        help="ShiftDetectorReplay only: leave out the evaluations this budget would have skipped",
    )
    args = parser.parse_args(argv)
    records = load_records(args.out)
    if not records:
        raise SystemExit(f"no recordings in {args.out}; run benchmarks/alert_truth/run.py first")
    detector = FixedRankRule() if args.detector is None else load_detector(args.detector)
    if args.max_overhead is not None:
        detector.max_overhead = args.max_overhead  # type: ignore[union-attr]
    name = args.detector or "old fixed rule (rank_vs_reference median >= 0.4), replayed"
    start = time.perf_counter()
    replayed = replay(records, detector)
    seconds = time.perf_counter() - start

    def alerts_for(rec: dict[str, Any]) -> list[Alert]:
        return replayed[rec["name"]][0]

    def watched_for(rec: dict[str, Any]) -> list[Watched]:
        return replayed[rec["name"]][1]

    kwargs: dict[str, Any] = {
        "alerts_for": alerts_for,
        "watched_for": watched_for,
        "title": name,
        "time_text": f"replay time {seconds:.1f} s",
    }
    text, _ = report(records, **kwargs)
    print(text)
    if args.markdown:
        md, _ = report(records, markdown=True, **kwargs)
        Path(args.markdown).write_text(md + "\n")
    if args.check:
        problems = check_against_live(records, replayed)
        for line in problems:
            print("MISMATCH", line)
        print(f"CHECK replayed alerts equal the live ones in {len(records) - len(problems)}/{len(records)} runs")
        if problems:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
