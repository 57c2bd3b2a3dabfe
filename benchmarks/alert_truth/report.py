"""The suite's detection report: per (scenario, model) cell, do alerts come when a shortcut is taken, and only then?

Definitions: :mod:`benchmarks.alert_truth.analysis`.

Run:  python benchmarks/alert_truth/report.py [--out DIR] [--markdown FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.alert_truth.analysis import (
    DEFAULT_OUT,
    Alert,
    RunResult,
    Watched,
    analyse_run,
    load_records,
    load_suite_info,
)

# ---------------------------------------------------------------------------------------------- table


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _cell_order(scenario: str, model: str) -> tuple[int, str, int, str]:
    from benchmarks.alert_truth.scenarios import MODELS, SCENARIOS

    names, models = list(SCENARIOS), list(MODELS)
    s = names.index(scenario) if scenario in names else len(names)
    m = models.index(model) if model in models else len(models)
    return (s, scenario, m, model)


def cell_rows(results: Sequence[RunResult]) -> list[dict[str, str]]:
    cells: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        cells.setdefault((r.scenario, r.model), []).append(r)
    rows = []
    for (scenario, model), runs in sorted(cells.items(), key=lambda item: _cell_order(*item[0])):
        kind = runs[0].kind
        evals = sum(r.evals_after_warmup for r in runs)
        false = sum(r.false_alerts for r in runs)
        margins = [r.margin for r in runs if r.margin is not None]
        row = {
            "scenario": scenario,
            "model": model,
            "kind": kind,
            "runs": str(len(runs)),
            "cue": runs[0].cue if len({r.cue for r in runs}) == 1 else "by seed",
        }
        if kind == "shortcut":
            taken = [r for r in runs if r.taken]
            detected = [r for r in taken if r.detected_epoch is not None]
            within = [r for r in detected if r.delay_behavioural is not None and r.delay_behavioural <= 1]
            row.update(
                taken=str(len(taken)),
                detected=f"{len(detected)}/{len(taken)}" if taken else "-",
                within1=f"{len(within)}/{len(taken)}" if taken else "-",
                delay_b=_fmt(
                    _median([float(r.delay_behavioural) for r in detected if r.delay_behavioural is not None]), 1
                ),
                delay_d=_fmt(_median([float(r.delay_data) for r in detected if r.delay_data is not None]), 1),
                b_onset=",".join(str(r.behavioural_onset) if r.taken else "x" for r in runs),
            )
        else:
            row.update(taken="-", detected="-", within1="-", delay_b="-", delay_d="-", b_onset="-")
        row.update(
            false=f"{false}/{evals}",
            per100=_fmt(100.0 * false / evals, 1) if evals else "-",
            margin_min=f"{min(margins):+.0%}" if margins else "-",
            margin_med=f"{_median(margins):+.0%}" if margins else "-",
            seconds=f"{_median([r.cpu_seconds if not math.isnan(r.cpu_seconds) else r.seconds for r in runs]):.0f}",
        )
        rows.append(row)
    return rows


COLUMNS = [
    ("scenario", "scenario"),
    ("model", "model"),
    ("cue", "cue"),
    ("runs", "runs"),
    ("taken", "taken"),
    ("b_onset", "b.onset"),
    ("detected", "detected"),
    ("within1", "<=1 eval"),
    ("delay_b", "delay(b)"),
    ("delay_d", "delay(d)"),
    ("false", "false/evals"),
    ("per100", "per 100"),
    ("margin_min", "margin min"),
    ("margin_med", "margin med"),
    ("seconds", "CPU s/run"),
]


LEGEND = (
    "taken: shortcut runs whose cue_rate crossed the level (b.onset: their behavioural onset epochs, x = not taken); "
    "detected: first alert at/after the data onset; <=1 eval: within 1 evaluation of the behavioural onset; "
    "delay(b)/delay(d): median evaluations from the behavioural/data onset; false/evals: evaluations with an alert "
    "after warm-up (shortcut cells: before the data onset); margin (share of the threshold): benign "
    "min (threshold - value) / threshold, detected value / threshold - 1"
)


def format_table(rows: Sequence[dict[str, str]], markdown: bool = False) -> str:
    headers = [h for _, h in COLUMNS]
    body = [[row[k] for k, _ in COLUMNS] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:>{w}}}" if i > 2 else f"{{:<{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*headers)] + [fmt.format(*cells) for cells in body])


def method_rows(results: Sequence[RunResult]) -> list[tuple[str, str, str]]:
    """False alerts per method and model family (benign runs), and how often each method made a detection."""
    rows = []
    models = sorted({r.model for r in results})
    methods = sorted({m for r in results for m in r.false_by_method} | {m for r in results for m in r.detected_by})
    for model in models:
        for method in methods:
            benign = [r for r in results if r.model == model and r.kind == "benign"]
            evals = sum(r.evals_after_warmup for r in benign)
            false = sum(r.false_by_method.get(method, 0) for r in benign)
            taken = [r for r in results if r.model == model and r.kind == "shortcut" and r.taken]
            first = sum(1 for r in taken if method in r.detected_by)
            rows.append(
                (
                    model,
                    method,
                    f"benign false alerts {false}/{evals}; among the first alerts after the onset of "
                    f"{len(taken)} taken shortcut runs: {first}",
                )
            )
    return rows


def summary_line(results: Sequence[RunResult], seconds: float | None, time_text: str | None = None) -> str:
    shortcut = [r for r in results if r.kind == "shortcut"]
    taken = [r for r in shortcut if r.taken]
    within = [r for r in taken if r.delay_behavioural is not None and r.delay_behavioural <= 1]
    detected = [r for r in taken if r.delay_behavioural is not None]
    benign = [r for r in results if r.kind == "benign"]
    evals = sum(r.evals_after_warmup for r in benign)
    false = sum(r.false_alerts for r in benign)
    pre_evals = sum(r.evals_after_warmup for r in shortcut)
    pre_false = sum(r.false_alerts for r in shortcut)
    pct = f"{100.0 * len(within) / len(taken):.0f}%" if taken else "n/a"
    per100 = f"{100.0 * false / evals:.1f}" if evals else "n/a"
    if time_text is None:
        time_text = "run time " + ("n/a" if seconds is None else f"{seconds / 60:.1f} min")
        cpu = sum(r.cpu_seconds for r in results if not math.isnan(r.cpu_seconds))
        if cpu:
            time_text += f" (the runs' CPU time {cpu / 60:.0f} min)"
    return (
        f"SUMMARY shortcut runs detected within 1 evaluation of the behavioural onset: {len(within)}/{len(taken)} "
        f"({pct}; {len(shortcut) - len(taken)} of {len(shortcut)} shortcut runs not taken, excluded); "
        f"median delay {_fmt(_median([float(r.delay_behavioural) for r in detected]), 1)} evaluations "  # type: ignore[arg-type]
        f"(detected at all: {len(detected)}/{len(taken)}); benign evaluations after warm-up: {evals}, "
        f"false alerts: {false} ({per100} per 100); shortcut runs' pre-onset false alerts: {pre_false}/{pre_evals}; "
        f"{time_text}"
    )


def report(
    records: Sequence[dict[str, Any]],
    *,
    alerts_for: Callable[[dict[str, Any]], Sequence[Alert]] | None = None,
    watched_for: Callable[[dict[str, Any]], list[Watched] | None] | None = None,
    seconds: float | None = None,
    markdown: bool = False,
    title: str = "today's detector (live alerts)",
    time_text: str | None = None,
) -> tuple[str, list[RunResult]]:
    """The whole report as text (table, per-method lines, SUMMARY line) and the per-run results."""
    results = [
        analyse_run(
            rec,
            None if alerts_for is None else alerts_for(rec),
            None if watched_for is None else watched_for(rec),
        )
        for rec in records
    ]
    rows = cell_rows(results)
    parts = []
    if markdown:
        parts.append(f"## Alert truth: {title}\n")
    else:
        parts.append(f"Alert truth: {title}; {len(records)} runs")
    parts.append(format_table(rows, markdown=markdown))
    parts.append("")
    prefix = "* " if markdown else "  "
    parts.append(f"{prefix}{LEGEND}")
    for model, method, text in method_rows(results):
        parts.append(f"{prefix}{model} / {method}: {text}")
    not_taken = [r.name for r in results if r.kind == "shortcut" and not r.taken]
    parts.append(f"{prefix}shortcut not taken: {', '.join(not_taken) if not_taken else 'none'}")
    if alerts_for is None:  # the live alerts carry their regions
        from benchmarks.alert_truth.localisation import localisation_lines

        parts.extend(localisation_lines(records, markdown))
    parts.append("")
    parts.append(summary_line(results, seconds, time_text))
    return "\n".join(parts), results


def run_lines(results: Sequence[RunResult]) -> str:
    """One line per run (for ``--runs``)."""
    lines = []
    for r in results:
        truth = (
            f"onset {r.onset} b.onset {r.behavioural_onset} detected {r.detected_epoch} by {','.join(r.detected_by)}"
            if r.kind == "shortcut"
            else "benign"
        )
        lines.append(
            f"  {r.name:<36} {truth:<55} alerts at {r.alert_epochs} max cue_rate {r.max_cue_rate:.2f} "
            f"margin {'-' if r.margin is None else format(r.margin, '+.0%')}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the recordings' directory")
    parser.add_argument("--markdown", default=None, help="also write the report as markdown to this file")
    parser.add_argument("--runs", action="store_true", help="also list every run")
    args = parser.parse_args(argv)
    records = load_records(args.out)
    if not records:
        raise SystemExit(f"no recordings in {args.out}; run benchmarks/alert_truth/run.py first")
    seconds = load_suite_info(args.out).get("wall_seconds")
    text, results = report(records, seconds=seconds)
    print(text)
    if args.runs:
        print(run_lines(results))
    if args.markdown:
        md, _ = report(records, seconds=seconds, markdown=True)
        Path(args.markdown).write_text(md + "\n")


if __name__ == "__main__":
    main()
