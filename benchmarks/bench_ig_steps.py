"""Fewer passes at equal completeness: Integrated Gradients' automatic step count vs fixed step counts.

For resnet18 (3x64x64) and a small CNN (3x32x32), at three training stages (random init; "early": a few SGD
steps, when the integrand along the path is rough; "trained": a few hundred steps on generated data), with 8
probes, the script

1. tabulates the relative completeness gap ``sum_i |sum(attr_i) - (F(x_i) - F(x'_i))| / sum_i |F(x_i) -
   F(x'_i)|`` of Gauss–Legendre IG (what the monitor uses) and of Captum's default Riemann-trapezoid rule
   against the step count, and the median relative L2 distance of the GL maps to a 128-step reference;
2. for each tolerance, runs ``IntegratedGradients(n_steps="auto", tolerance=tol)`` for 5 calls (5 epochs of
   an unchanged model) and counts the forward+backward passes per probe it spent, calibration included;
3. reports the passes saved against a fixed 32 steps (the monitor's default before ``"auto"``) at equal
   completeness (both
   meet the tolerance; where 32 steps do not, the automatic mode spends more and says so), and the steps
   the trapezoid rule would need for the same tolerance.

Pass counts and gaps are deterministic (no timing), so one run is enough.

    python benchmarks/bench_ig_steps.py [--device cuda] [--tolerances 0.05 0.02 0.01]
"""

from __future__ import annotations

import statistics

import torch
from _common import MODELS, apply_threads, base_parser, fmt_table, make_images, make_model, pick_device, print_header
from captum.attr import IntegratedGradients as CaptumIG

from lightning_xai.explain import IntegratedGradients
from lightning_xai.explain.guard import training_state_guard

GL_STEPS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
TRAPEZOID_STEPS = (8, 16, 32, 64, 128)
STAGES = {"init": 0, "early": 10, "trained": 300}
CALLS = 5
FIXED = 32


def train(model: torch.nn.Module, name: str, steps: int, device: torch.device) -> None:
    if not steps:
        return
    shape = MODELS[name][1]
    x, y = make_images(1024, shape, seed=3)
    x, y = x.to(device), y.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def relative_gap(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, attr: torch.Tensor) -> float:
    with torch.no_grad():
        delta = (model(x) - model(torch.zeros_like(x))).gather(1, labels.view(-1, 1)).squeeze(1).double()
    gap = attr.reshape(len(x), -1).double().sum(dim=1) - delta
    return float(gap.abs().sum() / delta.abs().sum())


def main() -> None:
    parser = base_parser((__doc__ or "").splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--tolerances", nargs="+", type=float, default=[0.05, 0.02, 0.01])
    parser.add_argument("--probes", type=int, default=8)
    args = parser.parse_args()
    apply_threads(args.threads)
    device = pick_device(args.device)
    print_header("IG steps: passes saved by the automatic step count at equal completeness", device)
    rows = []
    saved_at: dict[float, list[float]] = {t: [] for t in args.tolerances}
    for name in args.models:
        model = make_model(name, device)
        done = 0
        for stage, steps in STAGES.items():
            steps = steps if name == "small_cnn" or stage != "trained" else 100
            train(model, name, steps - done, device)
            done = steps
            x, labels = make_images(args.probes, MODELS[name][1], seed=1)
            x, labels = x.to(device), labels.to(device)
            with training_state_guard(model, device):
                ref = IntegratedGradients(n_steps=128).explain(model, x.clone(), labels).raw
                gl, dist = {}, {}
                for n in GL_STEPS:
                    out = IntegratedGradients(n_steps=n).explain(model, x.clone(), labels)
                    gl[n] = float(out.diagnostics["relative_gap"][0])
                    dist[n] = float(((out.raw - ref).norm(dim=(1, 2)) / ref.norm(dim=(1, 2)).clamp_min(1e-12)).median())
                trap = {}
                for n in TRAPEZOID_STEPS:
                    attr = CaptumIG(model).attribute(
                        x.clone(), target=labels.tolist(), n_steps=n, method="riemann_trapezoid", internal_batch_size=64
                    )
                    trap[n] = relative_gap(model, x, labels, attr)
                print(f"\n## {name} {stage}: relative gap by steps (GL | median L2 distance to 128-step GL)")
                print("   GL:        " + ", ".join(f"{n}: {gl[n]:.4f}" for n in GL_STEPS))
                print("   L2 to ref: " + ", ".join(f"{n}: {dist[n]:.3f}" for n in GL_STEPS))
                print("   trapezoid: " + ", ".join(f"{n}: {trap[n]:.4f}" for n in TRAPEZOID_STEPS), flush=True)
                for tol in args.tolerances:
                    ig = IntegratedGradients(n_steps="auto", tolerance=tol)
                    spent, chosen = 0.0, 0
                    for _ in range(CALLS):
                        out = ig.explain(model, x.clone(), labels)
                        spent += float(out.diagnostics["passes_per_probe"][0])
                        chosen = int(out.diagnostics["n_steps"][0])
                    per_call = spent / CALLS
                    fixed_ok = gl[FIXED] <= tol
                    trap_needed = next((n for n in TRAPEZOID_STEPS if trap[n] <= tol), None)
                    saved = 1.0 - per_call / FIXED
                    if fixed_ok:
                        saved_at[tol].append(saved)
                    rows.append(
                        {
                            "model": name,
                            "stage": stage,
                            "tol": tol,
                            "auto_steps": chosen,
                            "auto_gap": float(out.diagnostics["relative_gap"][0]),
                            "auto_passes/call": per_call,
                            "gap@32": gl[FIXED],
                            "32_meets": fixed_ok,
                            "saved_vs_32": saved,
                            "trapezoid_steps": trap_needed if trap_needed else f">{TRAPEZOID_STEPS[-1]}",
                        }
                    )
    print()
    print(fmt_table(rows))
    parts = []
    for tol in args.tolerances:
        values = saved_at[tol]
        worse = [r for r in rows if r["tol"] == tol and not r["32_meets"]]
        med = f"{100 * statistics.median(values):.0f} %" if values else "n/a"
        parts.append(
            f"tol {tol:g}: median {med} fewer passes than 32 steps over {len(values)} cases where 32 meet it"
            + (f" ({len(worse)} cases where 32 steps miss it: auto spends more to meet it)" if worse else "")
        )
    print(f"SUMMARY ig steps ({CALLS} calls per case, calibration included) on {device.type}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
