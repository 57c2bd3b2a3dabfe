"""``lightning-xai report LOGDIR --out report.html``: one self-contained HTML page from a run's TensorBoard event
files (drift curves with thresholds and alerts, a filmstrip per probe across all evaluations, localisation and
quality curves, the run's settings)."""

from lightning_xai.report.html import render_report, run_label, write_report
from lightning_xai.report.read import RunLog, find_runs, read_logdir, read_run, read_runs

__all__ = ["RunLog", "find_runs", "read_run", "read_runs", "read_logdir", "render_report", "run_label", "write_report"]
