"""``lightning-xai report LOGDIR --out report.html``: one self-contained HTML page from a run's TensorBoard event
files (drift curves with thresholds and alerts, a filmstrip per probe across all evaluations, localisation and
quality curves, the run's settings)."""

from lightning_xai.report.html import render_report, run_label
from lightning_xai.report.read import RunLog, find_runs, read_run, read_runs

__all__ = ["RunLog", "find_runs", "read_run", "read_runs", "read_logdir", "render_report", "run_label", "write_report"]


def read_logdir(logdir: str) -> list[RunLog]:
    """Every monitor's run under ``logdir``, each labelled by its path under ``logdir`` (e.g. ``version_1``, or
    ``shortcut/version_0`` for a parent directory; the directory's own name when the events lie in ``logdir``).

    Example::

        >>> read_logdir("/nonexistent")
        []
    """
    from pathlib import Path

    root = Path(logdir)
    runs = []
    for path in find_runs(root):
        relative = path.relative_to(root).as_posix()
        for run in read_runs(path):
            run.label = root.resolve().name if relative == "." else relative
            runs.append(run)
    return runs


def write_report(logdir: str, out: str, title: str = "lightning-xai report") -> list[RunLog]:
    """Read every run under ``logdir`` and write the page to ``out`` (its directory is created when missing);
    returns the runs read."""
    from pathlib import Path

    runs = read_logdir(logdir)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_report(runs, title), encoding="utf-8")
    return runs
