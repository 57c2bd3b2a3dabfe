"""Catch a model learning a shortcut, live in TensorBoard.

A small CNN learns handwritten digits (scikit-learn's bundled set, upscaled to 32x32). Every image carries a
small bright patch in one corner — a "decoy" that, at first, says nothing about the label. At the onset epoch
the training data changes: the decoy's corner and brightness now encode the label, and half of the training
digits are replaced by another class's digit, so they no longer match their label (a noisier data source).
The model starts reading the patch instead of the digit — the "Clever Hans" moment. `AttributionMonitor`, at its
defaults, watches the explanations of ten fixed validation images and raises an alert when they move.

The table printed per epoch shows what happened without looking at any attribution:
  clean     accuracy on the validation images;
  mism      accuracy when the decoy is swapped for another class's decoy (a digit reader is unaffected);
  decoy     share of those images classified as the *decoy's* class: reliance on the shortcut;
and what the monitor saw: the share of |attribution| on the decoy patch per method (relevance mass), the
drift against the reference epoch, and the alerts.

Run:  python examples/shortcut_detection.py            (about a minute on 2 CPU cores; each run is a new
      logs/shortcut/version_<n>, so re-runs never mix)
Then: tensorboard --logdir logs/shortcut --samples_per_plugin images=1000   (every sheet, not only 10)
  or: lightning-xai report logs/shortcut/version_<n> --out report.html
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared demo fixtures in examples/shortcut

import argparse
import logging
import os
import warnings

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from examples.shortcut.scenario import ShortcutConfig, run_shortcut_scenario
from lightning_xai import Display

#: TensorBoard's server keeps 10 images per tag unless told otherwise; 1000 keeps every sheet of any ordinary run
#: (``images=0`` shows none in TensorBoard 2.21's Images tab: the plugin asks its data provider for 0 samples)
TENSORBOARD_SAMPLES = "--samples_per_plugin images=1000"

COLUMNS = [
    ("gc mass", "xai/localization/gradcam/relevance_mass"),
    ("ig mass", "xai/localization/integrated_gradients/relevance_mass"),
    ("gc score", "xai/gradcam/alert/score"),
    ("gc thr", "xai/gradcam/alert/threshold"),
    ("ig score", "xai/integrated_gradients/alert/score"),
    ("ig thr", "xai/integrated_gradients/alert/threshold"),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs/shortcut")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--onset", type=int, default=4, help="first epoch with the predictive decoy")
    parser.add_argument("--export-docs", default=None, help="write the logged grids as PNG files here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small model: one thread is faster than two competing ones
    warnings.filterwarnings("ignore", module="lightning")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    config = ShortcutConfig(seed=args.seed, epochs=args.epochs, onset_epoch=args.onset)
    version = TensorBoardLogger(args.logdir, name="").version  # the next free version_<n>: a re-run never mixes
    run_dir = os.path.join(args.logdir, f"version_{version}")
    grids = {"display": Display(log_grids=True)} if args.export_docs else None  # the grids --export-docs writes
    records, monitor = run_shortcut_scenario(config, logdir=args.logdir, monitor_kwargs=grids, version=version)

    header = f"{'epoch':>5} {'clean':>6} {'mism':>6} {'decoy':>6} " + " ".join(f"{n:>8}" for n, _ in COLUMNS)
    print("\n" + header + "  alert")
    for r in records:
        marker = " <- onset" if r.epoch == config.onset_epoch else ""
        values = " ".join(f"{r.scalars[k]:8.3f}" if k in r.scalars else f"{'-':>8}" for _, k in COLUMNS)
        alert = ", ".join(r.alerts) if r.alerts else ""
        print(f"{r.epoch:>5} {r.clean_acc:6.3f} {r.mismatched_acc:6.3f} {r.decoy_rate:6.3f} {values}  {alert}{marker}")

    first = next((a for a in monitor.alerts), None)
    if first is None:
        print("\nNo alert fired.")
    else:
        print(f"\nFirst alert at epoch {first.epoch} (onset at epoch {config.onset_epoch}): {first.message}")
    if args.export_docs:
        from export_grids import export_grids  # type: ignore[import-not-found]

        before, after = config.onset_epoch - 1, len(records) - 1  # one image per evaluated epoch
        for index, name in ((before, "shortcut_before"), (after, "shortcut_after")):
            for path in export_grids(run_dir, args.export_docs, prefix=name, index=index):
                print(f"wrote {path}")
    bin_dir = os.path.dirname(sys.executable)  # the environment that ran this (make demo: .venv/bin)
    tensorboard, report = os.path.join(bin_dir, "tensorboard"), os.path.join(bin_dir, "lightning-xai")
    print(f"\nSee it in TensorBoard:\n  {tensorboard} --logdir {os.path.abspath(run_dir)} {TENSORBOARD_SAMPLES}")
    print(
        "  then open http://localhost:6006/#custom_scalars&_smoothingWeight=0 (TensorBoard smooths charts by 0.6 by "
        "default, which hides a one-epoch crossing; untick 'Ignore outliers in chart scaling' too)"
    )
    print(f"or as one HTML page:\n  {report} report {os.path.abspath(run_dir)} --out report.html")


if __name__ == "__main__":
    main()
