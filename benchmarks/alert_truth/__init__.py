"""alert_truth: a detection suite that tells whether the monitor's alerts can be trusted.

Monitored training runs of shortcut scenarios (a cue that becomes predictive mid-run; behavioural ground truth from
cue-swapped validation images) and benign scenarios (ordinary training events), over several model families and
seeds. Every run records its raw attribution maps per evaluation, so alert detectors can be replayed offline
(:mod:`benchmarks.alert_truth.replay`) without retraining. See ``run.py`` (CLI) and ``report.py`` (the table).
"""
