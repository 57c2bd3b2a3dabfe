"""Efficiency of the monitor's explanations: ideal time from the passes they need ÷ the time they take.

For each model (torchvision resnet18 on 3x64x64, a small CNN on 3x32x32) the script first measures, in this
run, the throughput curve of one forward+backward pass with respect to the input (the unit of work of every
gradient method; eval mode, frozen parameters, as the monitor runs it) over batch sizes, and of a no-grad
forward, and takes the best batch of each. Then, for P probes and each method, every repeat times

- the monitor's own path (training-state guard + float32 forward + shared prediction forward +
  ``explainer.explain`` + finiteness check, i.e. what the callback runs), and, right after it,
- the ideal: the same number of samples run as plain passes at the best batches,
  ``P * fwd_bwd_passes`` forward+backward samples and ``forward_passes`` forward samples,

so both see the same load on a shared machine; ``efficiency = ideal / measured`` per repeat, median over
repeats. ``fwd_bwd_passes`` is 1 per probe for Grad-CAM and n_steps per probe for IG; ``forward_passes`` is
P for the shared prediction forward (whose outputs IG reuses for F(x)), plus 1 for IG's F(baseline).
Forward passes are valued at the forward-only rate, stricter than counting them as forward+backward.
One warm-up call runs first (the first call is reported). IG is capped at ``--ig-max-batch`` samples per pass
(default 64), as the monitor caps it at the training batch size; its batch follows from that cap and P alone
(whole probe groups, :func:`lightning_xai.explain.integrated_gradients.plan_batches`).

Under contention (``--neighbours N`` starts N CPU-bound processes for the whole measurement) the ideal is timed
under the same contention, so the efficiency says how much worse than plain passes the monitor's path degrades.

    python benchmarks/bench_efficiency.py [--device cuda] [--repeats 5] [--models resnet18 small_cnn] [--neighbours 2]
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from _common import (
    MODELS,
    apply_threads,
    base_parser,
    fmt_table,
    frozen_eval,
    input_grad_pass,
    make_images,
    make_model,
    monitor_explain,
    monitor_setup,
    neighbours,
    pick_device,
    print_header,
    sync,
    throughput_curve,
    timed,
)

from lightning_xai.explain import Explainer, GradCam, IntegratedGradients


def ideal_runner(model, shape, device, fb_samples: int, f_samples: int, fb_batch: int, f_batch: int):  # type: ignore[no-untyped-def]
    """A callable running ``fb_samples`` fwd+bwd samples at ``fb_batch`` and ``f_samples`` forward samples at
    ``f_batch`` (whole passes; the time is scaled to the exact sample counts)."""
    fb_passes = max(1, math.ceil(fb_samples / fb_batch))
    f_passes = max(1, math.ceil(f_samples / f_batch)) if f_samples else 0
    x_fb = torch.randn(fb_batch, *shape, device=device)
    t_fb = torch.zeros(fb_batch, dtype=torch.long, device=device)
    x_f = torch.randn(f_batch, *shape, device=device)

    def run() -> float:
        with frozen_eval(model, device):
            sync(device)
            start = time.perf_counter()
            for _ in range(fb_passes):
                input_grad_pass(model, x_fb, t_fb)
            sync(device)
            mid = time.perf_counter()
            with torch.no_grad():
                for _ in range(f_passes):
                    model(x_f)
            sync(device)
            end = time.perf_counter()
        fb_time = (mid - start) * fb_samples / (fb_passes * fb_batch)
        f_time = (end - mid) * f_samples / (f_passes * f_batch) if f_passes else 0.0
        return fb_time + f_time

    return run


def measure(name: str, args, device, rows: list[dict]) -> None:  # type: ignore[no-untyped-def]
    shape = MODELS[name][1]
    model = make_model(name, device)
    batches = [1, 2, 4, 8, 16, 32, 64, 128] + ([256, 512, 1024] if device.type == "cuda" else [])
    fb = throughput_curve(model, shape, device, batches, repeats=args.repeats)
    fwd = throughput_curve(model, shape, device, batches, repeats=args.repeats, forward_only=True)
    best_fb_batch = max(fb, key=lambda b: fb[b])
    best_f_batch = max(fwd, key=lambda b: fwd[b])
    print(f"\n## {name} {shape}: fwd+bwd w.r.t. input, samples/s by batch:")
    print("   " + ", ".join(f"{b}: {v:.0f}" for b, v in fb.items()))
    print("   forward only: " + ", ".join(f"{b}: {v:.0f}" for b, v in fwd.items()))
    print(f"   best fwd+bwd at batch {best_fb_batch}, best forward at batch {best_f_batch}", flush=True)
    for probes in args.probes:
        images, labels = make_images(probes, shape, seed=1)
        ig = IntegratedGradients(n_steps=args.ig_steps, internal_batch_size=args.ig_max_batch or None)
        explainers: list[Explainer] = [GradCam(), ig]
        for explainer in explainers:
            monitor_setup(model, explainer, images)
            sync(device)
            start = time.perf_counter()
            first = monitor_explain(model, explainer, images, labels)
            sync(device)
            first_s = time.perf_counter() - start

            def call(e: Explainer = explainer, images=images, labels=labels) -> None:  # type: ignore[no-untyped-def]
                monitor_explain(model, e, images, labels)

            call()  # warm-up
            if isinstance(explainer, IntegratedGradients):
                steps = int(first.diagnostics["n_steps"][0])
                fb_samples, f_samples = probes * steps, probes + 1  # shared prediction pass + F(baseline)
                method, batch = f"ig({steps})", explainer.last_batch_size
            else:
                fb_samples, f_samples = probes, probes
                method, batch = "gradcam", probes
            ideal = ideal_runner(model, shape, device, fb_samples, f_samples, best_fb_batch, best_f_batch)
            ideal()
            measured, ideals = [], []
            for _ in range(args.repeats):
                measured.append(timed(call, device))
                ideals.append(ideal())
            ratios = [i / m for i, m in zip(ideals, measured, strict=True)]
            rows.append(
                {
                    "model": name,
                    "P": probes,
                    "method": method,
                    "batch": batch,
                    "ideal_ms": 1e3 * statistics.median(ideals),
                    "measured_ms": 1e3 * statistics.median(measured),
                    "first_call_ms": 1e3 * first_s,
                    "efficiency": statistics.median(ratios),
                    "eff_of_mins": min(ideals) / min(measured),
                }
            )
            cells = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items())
            print("   " + "  ".join(cells), flush=True)


def main() -> None:
    parser = base_parser((__doc__ or "").splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--probes", nargs="+", type=int, default=[8, 64])
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument(
        "--ig-max-batch",
        type=int,
        default=64,
        help="IG's batch cap, as the monitor sets it from the training batch size (0: none)",
    )
    args = parser.parse_args()
    apply_threads(args.threads)
    device = pick_device(args.device)
    print_header("efficiency: ideal time from the passes needed / time the monitor spends", device)
    rows: list[dict] = []
    with neighbours(args.neighbours):
        for name in args.models:
            measure(name, args, device, rows)
    print()
    print(fmt_table(rows))
    worst = {m: min(r["efficiency"] for r in rows if r["method"].startswith(m)) for m in ("gradcam", "ig")}
    parts = ", ".join(f"{r['model']} P={r['P']} {r['method']} {r['efficiency']:.2f}" for r in rows)
    print(
        f"SUMMARY efficiency (ideal/measured, >= 0.90 wanted) on {device.type}, {args.neighbours} CPU-bound "
        f"neighbour processes, {torch.get_num_threads()} torch threads: gradcam min {worst['gradcam']:.2f}, "
        f"ig min {worst['ig']:.2f} | {parts}"
    )


if __name__ == "__main__":
    main()
