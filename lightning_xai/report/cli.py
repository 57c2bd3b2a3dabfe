"""The ``lightning-xai`` console script: ``lightning-xai report LOGDIR [--out report.html] [--title TITLE]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning_xai.report.html import write_report
from lightning_xai.report.read import SUMMARY_RUNS, find_runs, read_logdir


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0; 1 when no run is under LOGDIR; 2 when the report cannot be written (one line, no traceback)."""
    parser = argparse.ArgumentParser(prog="lightning-xai", description="Tools for runs watched by AttributionMonitor.")
    report = parser.add_subparsers(dest="command", required=True).add_parser(
        "report",
        help="write a self-contained HTML report of a run from its TensorBoard event files",
        description="Drift curves with thresholds and alerts, a filmstrip per probe across every evaluation, "
        "localisation and quality curves when present, and the run's settings, in one HTML file.",
    )
    report.add_argument("logdir", help="a TensorBoard log directory (every run below it is reported)")
    report.add_argument("--out", default="report.html", help="the HTML file to write (a missing directory is created)")
    report.add_argument("--title", default="lightning-xai report", help="the page title")
    args = parser.parse_args(argv)
    if Path(args.logdir).name in SUMMARY_RUNS:  # one of a run's summary sub-directories: charts only, no evaluation
        print(f"{args.logdir} is a summary sub-directory of a monitor's run: give its parent; nothing written")
        return 1
    runs = read_logdir(args.logdir)
    if not runs:  # no page: a page saying "no run" would pass for a report
        print(f"{_why_none(Path(args.logdir))}; nothing written")
        return 1
    try:
        write_report(args.logdir, args.out, args.title, runs)
    except OSError as err:
        why = f"{err.strerror or err} ({err.filename or args.out})"
        print(f"lightning-xai report: cannot write {args.out}: {why}", file=sys.stderr)
        return 2
    alerts, evaluations = sum(len(r.alerts) for r in runs), sum(len(r.evaluations) for r in runs)
    size = Path(args.out).stat().st_size / 1e6 if Path(args.out).is_file() else 0.0
    print(f"wrote {args.out} ({size:.2f} MB): {len(runs)} run(s), {evaluations} evaluation(s), {alerts} alert(s)")
    return 0


def _why_none(logdir: Path) -> str:
    """Why no run was found under ``logdir``, in words."""
    if not logdir.exists():
        return f"no TensorBoard event files under {logdir} (no such directory)"
    if logdir.is_file():
        return f"{logdir} is a file: give the directory of a TensorBoardLogger's run (or a parent of it)"
    if find_runs(logdir):
        return f"the TensorBoard event files under {logdir} hold no AttributionMonitor run (no `xai/` tags)"
    return f"no TensorBoard event files under {logdir} (the report reads a TensorBoardLogger's)"


if __name__ == "__main__":
    sys.exit(main())
