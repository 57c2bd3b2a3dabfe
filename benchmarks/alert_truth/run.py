"""Run the alert-truth suite: every (scenario, model, seed) cell trained with the monitor at its defaults, recorded
(one ``.pt`` per run, raw maps of every evaluation included) and reported.

Shortcut scenarios: corner_patch, texture, position_mark, class_subset, gradual, object_colour (a cue that becomes
predictive at epoch 5). Benign scenarios: long, lr_drop, warm_restarts, augment_on, content_noise (the data change
without the shortcut), unfreeze, background_shift, random_tag, brightness_contrast. Models: cnn, resnet18, vgg, vit.
3 seeds each. Runs go to a process pool (``--workers``), each process with one torch thread, the costliest runs
first.

Run:  python benchmarks/alert_truth/run.py [--workers 2] [--seeds 3] [--out DIR] [--markdown FILE]
      all of it: 15 scenarios x 4 models x 3 seeds = 180 runs (the first 9 scenarios x cnn, resnet18, vgg, the
      81 runs of the first version, took about 120 CPU-minutes, resnet18 three quarters of it);
      ``--models cnn vgg`` about a third of an hour per 9 scenarios. Then ``report.py`` and ``replay.py`` work on
      the recordings.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: examples.shortcut, benchmarks

import argparse
import json
import multiprocessing
import platform
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from typing import Any

import lightning_xai
from benchmarks.alert_truth.analysis import DEFAULT_OUT, load_records
from benchmarks.alert_truth.report import report
from benchmarks.alert_truth.scenarios import MODELS, SCENARIOS, RunConfig, make_config, run

#: rough relative cost per epoch, to start the longest runs first
COST = {"resnet18": 12.0, "vgg": 2.5, "vit": 2.0, "cnn": 1.0}


def _job(config: RunConfig, out_dir: str) -> dict[str, Any]:
    record = run(config, out_dir, threads=1)
    alerts = sorted({(a["epoch"], a["method"]) for a in record["alerts"]})
    cue = [round(e["cue_rate"], 2) for e in record["evaluations"]]
    return {"name": config.name, "seconds": record["seconds"], "alerts": alerts, "cue_rate": cue}


def _git(*args: str) -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where the recordings go (one .pt per run)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--resume", action="store_true", help="keep recordings already in --out and skip those runs")
    parser.add_argument("--markdown", default=None, help="also write the report as markdown to this file")
    parser.add_argument("--code-version", default=None, help="what code this is (default: git HEAD of the checkout)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        for old in out.glob("*.pt"):
            old.unlink()
    configs = [make_config(s, m, seed) for s in args.scenarios for m in args.models for seed in range(args.seeds)]
    configs.sort(key=lambda c: -COST.get(c.model, 1.0) * c.epochs)
    todo = [c for c in configs if not (args.resume and (out / f"{c.name}.pt").exists())]
    print(f"alert_truth: {len(configs)} runs ({len(todo)} to train) on {args.workers} workers -> {out}", flush=True)

    # the code the runs use, taken before they start (commits made while the suite runs do not reach its workers)
    code_version = args.code_version or _git("rev-parse", "HEAD")
    dirty = None if args.code_version else _git("status", "--porcelain", "lightning_xai")
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited OpenMP thread pools
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
        futures = [pool.submit(_job, c, str(out)) for c in todo]
        for done, future in enumerate(as_completed(futures), 1):
            r = future.result()
            print(
                f"  [{done:>3}/{len(todo)}] {r['name']:<36} {r['seconds']:6.0f} s  alerts {r['alerts']}  "
                f"cue_rate {r['cue_rate']}",
                flush=True,
            )
    wall = time.perf_counter() - start
    info = {
        "wall_seconds": wall,
        "workers": args.workers,
        "runs": [asdict(c) for c in configs],
        "code_version": code_version,
        "git_dirty_lightning_xai": dirty,
        "lightning_xai": str(Path(lightning_xai.__file__).parent),
        "platform": platform.platform(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (out / "suite.json").write_text(json.dumps(info, indent=1))
    print(f"alert_truth: {len(todo)} runs trained in {wall / 60:.1f} min", flush=True)

    records = load_records(out)
    text, _ = report(records, seconds=wall)
    print(text)
    if args.markdown:
        md, _ = report(records, seconds=wall, markdown=True)
        Path(args.markdown).write_text(md + "\n")


if __name__ == "__main__":
    main()
