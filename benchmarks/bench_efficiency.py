"""Efficiency of the monitor's explanations: ideal time from the passes they need ÷ the time they take.

For each model (torchvision resnet18 on 3x64x64, a small CNN on 3x32x32) the script first measures, in this
run, the best throughput of one forward+backward pass with respect to the input (the unit of work of every
gradient method) over batch sizes, and the best forward-only throughput. Then, for P probes, it times the
monitor's own path for each method (training-state guard + float32 forward + shared prediction forward +
``explainer.explain`` + finiteness check, i.e. what the callback runs) and reports

    efficiency = ideal / measured,
    ideal      = P * fwd_bwd_passes / best_fwd_bwd_throughput + forward_passes / best_forward_throughput

with fwd_bwd_passes = 1 per probe for Grad-CAM and n_steps per probe for IG, and forward_passes = P for the
shared prediction forward, plus P + 1 for IG's completeness check (F(x) per probe, F(baseline) once). Forward
passes are valued at the measured forward-only throughput, which is stricter than counting them as
forward+backward passes. Medians of ``--repeats`` timed calls after one warm-up call (the first call, which
calibrates IG's batch size, is reported separately).

    python benchmarks/bench_efficiency.py [--device cuda] [--repeats 5] [--models resnet18 small_cnn]
"""

from __future__ import annotations

import time

from _common import (
    MODELS,
    apply_threads,
    base_parser,
    fmt_table,
    make_images,
    make_model,
    median_time,
    monitor_explain,
    monitor_setup,
    pick_device,
    print_header,
    sync,
    throughput_curve,
)

from lightning_xai.explainers import Explainer, GradCam, IntegratedGradients


def measure(name: str, args, device, rows: list[dict]) -> None:  # type: ignore[no-untyped-def]
    shape = MODELS[name][1]
    model = make_model(name, device)
    batches = [1, 2, 4, 8, 16, 32, 64, 128] + ([256, 512, 1024] if device.type == "cuda" else [])
    fb = throughput_curve(model, shape, device, batches, repeats=args.repeats)
    fwd = throughput_curve(model, shape, device, batches, repeats=args.repeats, forward_only=True)
    best_fb, best_f = max(fb.values()), max(fwd.values())
    knee = min(b for b, v in fb.items() if v >= 0.95 * best_fb)
    print(f"\n## {name} {shape}: fwd+bwd w.r.t. input, samples/s by batch:")
    print("   " + ", ".join(f"{b}: {v:.0f}" for b, v in fb.items()))
    print("   forward only: " + ", ".join(f"{b}: {v:.0f}" for b, v in fwd.items()))
    print(f"   best fwd+bwd {best_fb:.0f}/s (95 % of it from batch {knee}); best forward {best_f:.0f}/s", flush=True)
    for probes in args.probes:
        images, labels = make_images(probes, shape, seed=1)
        explainers: list[Explainer] = [GradCam(), IntegratedGradients(n_steps=args.ig_steps)]
        for explainer in explainers:
            monitor_setup(model, explainer, images)
            sync(device)
            start = time.perf_counter()
            first = monitor_explain(model, explainer, images, labels)
            sync(device)
            first_s = time.perf_counter() - start

            def call(e: Explainer = explainer, images=images, labels=labels) -> None:  # type: ignore[no-untyped-def]
                monitor_explain(model, e, images, labels)

            # more warm calls while IG is still measuring its knee (it ramps on the real work)
            for _ in range(8):
                if not (isinstance(explainer, IntegratedGradients) and explainer.batcher.ramping):
                    break
                call()
            measured = median_time(call, device, args.repeats, warmup=1)
            if isinstance(explainer, IntegratedGradients):
                steps = int(first.diagnostics["n_steps"][0])
                fb_passes, f_passes = probes * steps, probes + probes + 1
                method, batch = f"ig({steps})", explainer.last_batch_size
            else:
                fb_passes, f_passes = probes, probes
                method, batch = "gradcam", probes
            ideal = fb_passes / best_fb + f_passes / best_f
            rows.append(
                {
                    "model": name,
                    "P": probes,
                    "method": method,
                    "batch": batch,
                    "ideal_ms": 1e3 * ideal,
                    "measured_ms": 1e3 * measured,
                    "first_call_ms": 1e3 * first_s,
                    "efficiency": ideal / measured,
                }
            )
            cells = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items())
            print("   " + "  ".join(cells), flush=True)


def main() -> None:
    parser = base_parser((__doc__ or "").splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--probes", nargs="+", type=int, default=[8, 64])
    parser.add_argument("--ig-steps", type=int, default=32)
    args = parser.parse_args()
    apply_threads(args.threads)
    device = pick_device(args.device)
    print_header("efficiency: ideal time from the passes needed / time the monitor spends", device)
    rows: list[dict] = []
    for name in args.models:
        measure(name, args, device, rows)
    print()
    print(fmt_table(rows))
    worst = {m: min(r["efficiency"] for r in rows if r["method"].startswith(m)) for m in ("gradcam", "ig")}
    parts = ", ".join(f"{r['model']} P={r['P']} {r['method']} {r['efficiency']:.2f}" for r in rows)
    print(
        f"SUMMARY efficiency (ideal/measured, >= 0.90 wanted) on {device.type}: gradcam min {worst['gradcam']:.2f}, "
        f"ig min {worst['ig']:.2f} | {parts}"
    )


if __name__ == "__main__":
    main()
