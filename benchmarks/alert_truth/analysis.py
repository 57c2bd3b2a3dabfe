"""Each recorded run of the suite, analysed: its behavioural onset, its alerts, and what the watched test saw.

Definitions (evaluation = one explained validation epoch; every epoch is evaluated at the monitor's defaults):

* **behavioural onset** (shortcut runs): the first evaluation at/after the data onset whose ``cue_rate`` (share of
  cue-swapped validation images classified as the cue's class) is ``> CUE_LEVEL`` and at least ``CUE_MARGIN``
  above its highest value before the data onset. A shortcut run without one is "not taken" and left out of the
  detection rate.
* **detected**: an alert (any method) at an evaluation at/after the data onset. **delay**: evaluations from the
  behavioural onset to the first such alert (0 = at that evaluation; negative = after the data onset but before
  the behaviour crossed the level); "from data" counts the evaluation at the end of the onset epoch as 1.
* **false alerts**: after warm-up (epoch ``>= warmup_epochs``), an evaluation of a benign run with any alert; in
  shortcut runs, the evaluations after warm-up and before the data onset (column ``pre``).
* **watched value / threshold** per method: scalars ``xai/<m>/alert/score`` and ``xai/<m>/alert/threshold`` when
  logged, else ``xai/<m>/drift/rank_vs_reference/median`` against ``0.4`` (today's default rule).
  With the default detector the watched test at an evaluation after a candidate is the confirmation (the movement
  over two evaluations against √2 × the candidate's threshold); a candidate itself is not watched (it is no alert).
  **margin**, as a share of the threshold: benign runs, ``(threshold - value) / threshold``, the smallest after
  warm-up over evaluations and methods (how close the run came to an alert); detected shortcut runs,
  ``value / threshold - 1`` at the detection (the alerting methods', the largest).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

CUE_LEVEL = 0.3
CUE_MARGIN = 0.2
FALLBACK_KEY = "xai/{method}/drift/rank_vs_reference/median"
FALLBACK_THRESHOLD = 0.4
DEFAULT_OUT = Path(__file__).resolve().parent / "out"

#: (value, threshold) per method at one evaluation
Watched = dict[str, tuple[float, float]]
#: an alert: (epoch, method)
Alert = tuple[int, str]


# ---------------------------------------------------------------------------------------------- loading


def load_records(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every run recorded in ``out_dir`` (``*.pt``, one per run), sorted by name."""
    paths = sorted(p for p in Path(out_dir).glob("*.pt") if p.name != "suite.pt")
    return [torch.load(p, weights_only=True) for p in paths]


def load_suite_info(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / "suite.json"
    return json.loads(path.read_text()) if path.exists() else {}


# ---------------------------------------------------------------------------------------------- truth


def evaluated(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluations the monitor explained (every validation epoch at the defaults)."""
    return [e for e in record["evaluations"] if e.get("evaluated", True)]


def behavioural_onset(record: dict[str, Any], level: float = CUE_LEVEL, margin: float = CUE_MARGIN) -> int | None:
    """Epoch of the behavioural onset of a shortcut run (None: shortcut not taken, or a benign run)."""
    onset = record["config"].get("onset_epoch")
    if onset is None:
        return None
    evals = record["evaluations"]
    pre = max((e["cue_rate"] for e in evals if e["epoch"] < onset), default=0.0)
    for e in evals:
        if e["epoch"] >= onset and e["cue_rate"] > level and e["cue_rate"] >= pre + margin:
            return int(e["epoch"])
    return None


def methods_of(record: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for e in record["evaluations"]:
        for m in e.get("maps", {}):
            if m not in names:
                names.append(m)
    return names


def live_watched(record: dict[str, Any]) -> list[Watched]:
    """Per evaluated epoch, the watched value and threshold of each method, read from the logged scalars."""
    out: list[Watched] = []
    methods = methods_of(record)
    for e in evaluated(record):
        s = e.get("scalars", {})
        w: Watched = {}
        for m in methods:
            tests = [
                (float(s[f"{prefix}/score"]), float(s.get(f"{prefix}/threshold", math.nan)))
                for prefix in (f"xai/{m}/alert", f"xai/{m}/alert/colour")  # where, and what it is made of
                if f"{prefix}/score" in s
            ]
            if tests:  # the test closest to (or furthest over) its threshold
                w[m] = max(tests, key=lambda vt: vt[0] / vt[1] if vt[1] > 0 else -math.inf)
            elif FALLBACK_KEY.format(method=m) in s:
                w[m] = (float(s[FALLBACK_KEY.format(method=m)]), FALLBACK_THRESHOLD)
        out.append(w)
    return out


def live_alerts(record: dict[str, Any]) -> list[Alert]:
    return [(int(a["epoch"]), str(a["method"])) for a in record["alerts"]]


@dataclass
class RunResult:
    name: str
    scenario: str
    model: str
    seed: int
    kind: str
    cue: str
    seconds: float
    cpu_seconds: float = math.nan
    onset: int | None = None
    behavioural_onset: int | None = None
    taken: bool = False
    detected_epoch: int | None = None
    detected_by: tuple[str, ...] = ()
    delay_behavioural: int | None = None
    delay_data: int | None = None
    evals_after_warmup: int = 0  # benign: all after warm-up; shortcut: after warm-up and before the onset
    false_alerts: int = 0
    false_by_method: dict[str, int] = field(default_factory=dict)
    margin: float | None = None
    max_cue_rate: float = 0.0
    alert_epochs: list[int] = field(default_factory=list)


def analyse_run(
    record: dict[str, Any], alerts: Sequence[Alert] | None = None, watched: list[Watched] | None = None
) -> RunResult:
    """Score one run's alerts (default: the live ones) against its behavioural truth."""
    cfg = record["config"]
    alerts = live_alerts(record) if alerts is None else list(alerts)
    watched = live_watched(record) if watched is None else watched
    warmup = int(record.get("warmup_epochs", 2))
    evals = evaluated(record)
    epochs = [int(e["epoch"]) for e in evals]
    by_epoch: dict[int, set[str]] = {}
    for epoch, method in alerts:
        by_epoch.setdefault(int(epoch), set()).add(method)
    res = RunResult(
        name=record["name"],
        scenario=cfg["scenario"],
        model=cfg["model"],
        seed=int(cfg["seed"]),
        kind=cfg["kind"],
        cue=cfg["cue"],
        seconds=float(record.get("seconds", math.nan)),
        cpu_seconds=float(record.get("cpu_seconds", math.nan)),
        onset=cfg.get("onset_epoch"),
        max_cue_rate=max((e["cue_rate"] for e in record["evaluations"]), default=0.0),
        alert_epochs=sorted(by_epoch),
    )
    onset = res.onset
    false_window = [i for i, ep in enumerate(epochs) if ep >= warmup and (onset is None or ep < onset)]
    res.evals_after_warmup = len(false_window)
    for i in false_window:
        fired = by_epoch.get(epochs[i], set())
        res.false_alerts += bool(fired)
        for m in fired:
            res.false_by_method[m] = res.false_by_method.get(m, 0) + 1
    if res.kind == "benign":
        margins = []
        for m in {m for i in false_window for m in watched[i]}:
            values = [watched[i][m] for i in false_window if m in watched[i]]
            margins.append(min((t - v) / t for v, t in values if t > 0))  # per evaluation: a threshold moves
        res.margin = min(margins) if margins else None
        return res
    res.behavioural_onset = behavioural_onset(record)
    res.taken = res.behavioural_onset is not None
    assert onset is not None
    after = [i for i, ep in enumerate(epochs) if ep >= onset and ep in by_epoch]
    if after:
        i = after[0]
        res.detected_epoch = epochs[i]
        res.detected_by = tuple(sorted(by_epoch[epochs[i]]))
        first_after_onset = next(j for j, ep in enumerate(epochs) if ep >= onset)
        res.delay_data = i - first_after_onset + 1
        if res.taken:
            b_onset = res.behavioural_onset
            res.delay_behavioural = i - next(j for j, ep in enumerate(epochs) if ep >= b_onset)  # type: ignore[operator]
        values = [watched[i][m][0] / watched[i][m][1] - 1 for m in res.detected_by if m in watched[i]]
        res.margin = max(values) if values else None
    return res
