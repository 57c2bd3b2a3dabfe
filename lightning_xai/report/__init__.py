"""``lightning-xai report LOGDIR --out report.html``: one self-contained HTML page from a run's TensorBoard event
files (drift curves with thresholds and alerts, a filmstrip per probe across epochs, localisation and quality
curves, the run's settings)."""

from lightning_xai.report.html import render_report
from lightning_xai.report.read import RunLog, find_runs, read_run

__all__ = ["RunLog", "find_runs", "read_run", "render_report", "write_report"]


def write_report(logdir: str, out: str, title: str = "lightning-xai report") -> list[RunLog]:
    """Read every run under ``logdir`` and write the page to ``out``; returns the runs read."""
    from pathlib import Path

    runs = [read_run(path) for path in find_runs(logdir)]
    Path(out).write_text(render_report(runs, title), encoding="utf-8")
    return runs
