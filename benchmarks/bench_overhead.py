"""End-to-end overhead: wall time of ``Trainer.fit`` with ``AttributionMonitor`` ÷ without, on a realistic run.

The run: torchvision resnet18 (random init, 10 classes) on 3x64x64 generated images, 2,000 training images
per epoch (batch 64, SGD with momentum), 256 validation images, 3 epochs, a ``TensorBoardLogger``; no
progress bar, checkpointing or sanity check in any configuration. Configurations (``--configs``):

- ``none``: no monitor;
- ``default``: ``AttributionMonitor()`` at its defaults (8 probes from the validation data, Grad-CAM and
  Integrated Gradients with the automatic step count every epoch, the explanation sheet logged);
- ``ig32``: ``AttributionMonitor(methods=["gradcam", IntegratedGradients(n_steps=32)])`` (a fixed step count: the
  default before 0.1.0's release);
- any other name: ``--extra NAME='{"json": "kwargs"}'`` (``benchmarks._common.monitor_arguments``: e.g.
  ``'{"budget": {"max_overhead": 0.05}}'``).

Rounds interleave the configurations (rotating their order) so that load changes on a shared machine hit
all of them; the ratio is taken within each round and the median over rounds is reported. Three figures:
the wall ratio (what was asked; on a shared machine other processes move it by +-20 % from fit to fit), the
process CPU-time ratio (training thread + background writer + thread pools; far less sensitive to other
processes, best with ``--threads 1`` where no OpenMP thread spins waiting for a descheduled partner), and
the time inside the monitor's hooks over the unmonitored fit (the direct cost on the training thread), split into
the explanations (their passes: ``Evaluation.explain_seconds``) and everything else (the rest of the hooks plus the
background writer's CPU time: drift, alerts, pictures, logging). One short warm-up fit runs first.
``--max-minutes`` stops adding rounds (at least ``--min-rounds``) when the next one would not fit.

    python benchmarks/bench_overhead.py [--rounds 3] [--epochs 3] [--configs none default ig32]
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _common import (
    apply_threads,
    base_parser,
    fmt_table,
    lightning_module,
    loaders,
    monitor_arguments,
    neighbours,
    pick_device,
    print_header,
    quiet_lightning,
    trainer_kwargs,
)

from lightning_xai import AttributionMonitor

HOOKS = (
    "setup",
    "on_fit_start",
    "on_train_start",
    "on_validation_start",
    "on_validation_epoch_end",
    "on_validation_end",
    "on_fit_end",
    "teardown",
)
IG32 = {"methods": ["gradcam", {"integrated_gradients": {"n_steps": 32}}]}
PRESETS: dict[str, dict[str, Any] | None] = {"none": None, "default": {}, "ig32": IG32}


def instrument(monitor: AttributionMonitor, spent: list[float]) -> None:
    """Sum the time spent in every hook of ``monitor`` into ``spent[0]``."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        return wrapper

    for hook in HOOKS:
        setattr(monitor, hook, wrap(getattr(monitor, hook)))


def fit_once(kwargs: dict[str, Any] | None, args: Any, device: Any, epochs: int, limit: int | None = None) -> dict:
    import lightning.pytorch as L

    train, val = loaders("resnet18", args.train_size, args.val_size)
    spent = [0.0]
    callbacks = []
    monitor = None
    if kwargs is not None:
        monitor = AttributionMonitor(**monitor_arguments(kwargs))
        instrument(monitor, spent)
        callbacks.append(monitor)
    with tempfile.TemporaryDirectory() as tmp:
        extra = {"limit_train_batches": limit, "limit_val_batches": limit} if limit else {}
        trainer = L.Trainer(callbacks=callbacks, **trainer_kwargs(device, epochs, tmp), **extra)
        model = lightning_module("resnet18", seed=0)
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.fit(model, train, val)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    info: dict[str, Any] = {"wall": wall, "cpu": cpu, "monitor": spent[0]}
    if monitor is not None:
        each = [h.explain_seconds for h in monitor.history]
        info["explain"], info["evaluations"] = sum(each), len(each)
        info["writer_cpu"] = float(getattr(monitor.media.writer, "busy_seconds", 0.0))  # pictures, off the hooks
        info["first_eval"] = each[0] if each else 0.0
        info["steady_eval"] = statistics.median(each[len(each) // 2 :]) if len(each) > 1 else math.nan
        info["skipped"] = monitor.cost.skipped
        ig = next((e for e in monitor.explainers if e.name == "integrated_gradients"), None)
        if ig is not None:
            info["ig_steps"] = [h.scalars.get("xai/integrated_gradients/n_steps") for h in monitor.history]
            info["ig_batch"] = getattr(ig, "last_batch_size", None)
    return info


def main() -> None:
    parser = base_parser((__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--val-size", type=int, default=256)
    parser.add_argument("--configs", nargs="+", default=["none", "default", "ig32"])
    parser.add_argument("--extra", action="append", default=[], help="NAME='{json kwargs}' (repeatable)")
    parser.add_argument("--max-minutes", type=float, default=9.5)
    args = parser.parse_args()
    apply_threads(args.threads)
    quiet_lightning()
    device = pick_device(args.device)
    presets = dict(PRESETS)
    for item in args.extra:
        name, _, spec = item.partition("=")
        presets[name] = json.loads(spec)
    configs = list(dict.fromkeys(["none", *args.configs]))
    print_header(
        f"end-to-end overhead: Trainer.fit with / without the monitor; resnet18 3x64x64, {args.train_size} train "
        f"images/epoch, {args.epochs} epochs, configs {configs}",
        device,
    )
    began = time.perf_counter()
    fit_once(
        {"methods": ["gradcam", {"integrated_gradients": {"n_steps": 2}}]}, args, device, 1, limit=2
    )  # warm-up: imports, kernels, thread pools
    results: dict[str, list[dict]] = {c: [] for c in configs}
    rows = []
    stack = contextlib.ExitStack()
    stack.enter_context(neighbours(args.neighbours))
    for r in range(args.rounds):
        elapsed = time.perf_counter() - began
        if r >= args.min_rounds and r > 0 and elapsed / 60 * (r + 1) / r > args.max_minutes:
            print(f"   stopping after {r} rounds: the next one would pass --max-minutes {args.max_minutes}")
            break
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for name in order:
            results[name].append(fit_once(presets[name], args, device, args.epochs))
        base, base_cpu = results["none"][-1]["wall"], results["none"][-1]["cpu"]
        for name in configs:
            res = results[name][-1]
            rows.append(
                {
                    "round": r,
                    "config": name,
                    "fit_s": res["wall"],
                    "ratio": res["wall"] / base,
                    "cpu_s": res["cpu"],
                    "cpu_ratio": res["cpu"] / base_cpu,
                    "monitor_s": res["monitor"],
                    "explain_s": res.get("explain", 0.0),
                    "evals": res.get("evaluations", "-"),
                    "skipped": res.get("skipped", "-"),
                    "first_s": res.get("first_eval", math.nan),
                    "steady_s": res.get("steady_eval", math.nan),
                    "ig_steps": res.get("ig_steps", "-"),
                    "ig_batch": res.get("ig_batch", "-"),
                }
            )
            print("   " + fmt_table(rows[-1:]).splitlines()[-1], flush=True)
    stack.close()
    print(fmt_table(rows))
    parts = []
    for name in configs[1:]:
        ratios = [r["ratio"] for r in rows if r["config"] == name]
        cpu_ratios = [r["cpu_ratio"] for r in rows if r["config"] == name]
        direct = [r["monitor"] / b["wall"] for r, b in zip(results[name], results["none"], strict=False)]
        first = [r["first_eval"] / r["steady_eval"] for r in results[name] if r.get("steady_eval", 0) > 0]
        # the split of what the monitor adds: its explanations (the passes) vs everything else (the rest of its hooks
        # on the training thread plus the background writer's CPU time), each a share of the unmonitored fit
        passes = [r["explain"] / b["wall"] for r, b in zip(results[name], results["none"], strict=False)]
        rest = [
            (r["monitor"] - r["explain"] + r.get("writer_cpu", 0.0)) / b["wall"]
            for r, b in zip(results[name], results["none"], strict=False)
        ]
        parts.append(
            f"{name}: wall x{statistics.median(ratios):.3f} (rounds {', '.join(f'{x:.3f}' for x in ratios)}), "
            f"process CPU x{statistics.median(cpu_ratios):.3f}, monitor hooks {100 * statistics.median(direct):.1f} % "
            f"of the unmonitored fit: explanations {100 * statistics.median(passes):.1f} %, everything else "
            f"{100 * statistics.median(rest):.2f} % (rounds {', '.join(f'{100 * x:.2f}' for x in rest)})"
            + (f", first evaluation {statistics.median(first):.2f}x a steady one" if first else "")
        )
    print(
        f"SUMMARY end-to-end overhead (median over {len(results['none'])} interleaved rounds, wall with/without, "
        f"<= 5 % wanted) on {device.type}: " + "; ".join(parts) + f" | unmonitored fit "
        f"{statistics.median(r['wall'] for r in results['none']):.1f} s"
    )


if __name__ == "__main__":
    main()
