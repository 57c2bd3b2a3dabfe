"""What each method costs per evaluation, what the quality measures add, and which methods pass the
randomisation sanity check on the trained demo model (issue 10; the figures in docs/methods.md).

1. **Time per evaluation** of every method of the registry, 8 probes, on the demo model
   (``examples.shortcut.scenario.DigitsCNN``, 1x32x32) and on torchvision's resnet18 at 3x64x64 (random weights):
   the monitor's own path (:func:`lightning_xai.explain.run.explain_probes`: guard, shared prediction pass, the
   method), median of ``--repeats`` warm calls, in milliseconds and in units of one forward+backward pass on the 8
   probes (a ratio that survives a busy machine). Integrated Gradients runs at the monitor's default
   (``"auto"`` steps, calibrated on the warm-up call). A method that refuses the model at setup says why.
2. **Quality measures**: the extra time of ``quality=("sparseness", "entropy")`` and of
   ``("deletion", "insertion")`` for Grad-CAM and IG on the demo model, as a share of the evaluation.
3. **Sanity check**: the demo model trained 3 epochs on scikit-learn's digits (32x32), every attribution method
   checked with its top layer re-initialised (median rank correlation, pass below 0.5).

    python benchmarks/bench_methods.py [--device cpu] [--repeats 5] [--threads 2] [--skip-sanity]

About 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    apply_threads,
    base_parser,
    fmt_table,
    input_grad_pass,
    make_images,
    pick_device,
    print_header,
    resnet18,
    timed,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/ (the demo's CNN), from any directory

from examples.shortcut.scenario import DigitsCNN  # noqa: E402
from lightning_xai.explain import build_explainers, method_names  # noqa: E402
from lightning_xai.explain.forward import model_forward
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.run import explain_probes
from lightning_xai.explain.sanity import sanity_check

PROBES = 8
QUALITY = {"pure": ("sparseness", "entropy"), "passes": ("deletion", "insertion")}


def demo_model(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return DigitsCNN().to(device).eval()


def setup_explainer(model: torch.nn.Module, name: str, images: torch.Tensor) -> Any:
    explainer = build_explainers([name])[0]
    device = next(model.parameters()).device
    with training_state_guard(model, device), model_forward(model) as forward:
        explainer.setup(model, forward, images[:1].to(device).clone())
    return explainer


def time_methods(label: str, model: torch.nn.Module, shape: tuple[int, int, int], args: Any) -> list[dict[str, Any]]:
    """Each method's own call (inside the guard and the float32 forward, as the monitor runs it; the shared
    prediction pass is not counted), timed next to one forward+backward pass on the same probes: on a busy
    machine the ratio of the two is steadier than either time."""
    device = next(model.parameters()).device
    images, labels = make_images(PROBES, shape, seed=1)
    x, t = images.to(device), labels.to(device)
    rows = []
    for name in method_names():
        row: dict[str, Any] = {"model": label, "method": name}
        try:
            explainer = setup_explainer(model, name, images)
        except ValueError as err:
            rows.append({**row, "ms": "-", "x_pass": "-", "passes/probe": "-", "note": f"refused: {str(err)[:70]}"})
            continue
        with training_state_guard(model, device), model_forward(model) as forward:
            with torch.no_grad():
                outputs = forward(x)
            offered = {"outputs": outputs}
            kwargs = {k: v for k, v in offered.items() if k in explainer.explain_keywords}
            explainer.explain(forward, x.clone(), t, **kwargs)  # warm-up (IG calibrates its steps here)
            seconds, ratios = [], []
            for _ in range(args.repeats):
                unit = timed(lambda: input_grad_pass(model, x, t), device)
                spent = timed(lambda e=explainer, kw=kwargs: e.explain(forward, x.clone(), t, **kw), device)
                seconds.append(spent)
                ratios.append(spent / unit)
        passes = explainer.passes_per_probe
        if name == "integrated_gradients":
            passes = float(explainer.current_steps or passes)
        ms, ratio = 1000 * statistics.median(seconds), statistics.median(ratios)
        rows.append({**row, "ms": ms, "x_pass": ratio, "passes/probe": passes, "note": ""})
        print(f"  {label} {name}: {ms:.1f} ms, {ratio:.1f} passes", flush=True)
    return rows


def time_quality(model: torch.nn.Module, args: Any) -> list[dict[str, Any]]:
    """One evaluation (:func:`explain_probes` with one method) without and with each set of quality measures,
    timed back to back in every repeat; medians of the per-repeat differences."""
    device = next(model.parameters()).device
    images, labels = make_images(PROBES, (1, 32, 32), seed=1)
    rows = []
    for name in ("gradcam", "integrated_gradients"):
        explainer = setup_explainer(model, name, images)
        explain_probes(model, images, labels, [explainer])  # IG calibrates its steps here

        def run(quality: tuple[str, ...], e: Any = explainer) -> None:
            explain_probes(model, images, labels, [e], quality=quality)

        base, extra = [], {key: [] for key in QUALITY}  # type: dict[str, list[float]]
        for _ in range(args.repeats):
            base.append(timed(lambda: run(()), device))
            for key, quality in QUALITY.items():
                extra[key].append(timed(lambda q=quality: run(q), device) - base[-1])
        row: dict[str, Any] = {"method": name, "evaluation_ms": 1000 * statistics.median(base)}
        for key in QUALITY:
            row[f"{key}_ms"] = 1000 * statistics.median(extra[key])
            row[f"{key}_%"] = 100 * statistics.median(extra[key]) / statistics.median(base)
        rows.append(row)
    return rows


def trained_demo_model(device: torch.device, epochs: int = 3) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    labels = torch.tensor(digits.target, dtype=torch.long)
    model = demo_model(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    train, probes = torch.arange(0, 1500), torch.arange(1500, 1500 + 2 * PROBES, 2)
    for _ in range(epochs):
        for batch in train[torch.randperm(len(train), generator=g)].split(64):
            loss = F.cross_entropy(model(images[batch].to(device)), labels[batch].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[1500:].to(device)).argmax(1).cpu() == labels[1500:]).float().mean()
    print(f"# demo model trained {epochs} epochs on digits: held-out accuracy {accuracy:.3f}")
    return model, images[probes], labels[probes]


def sanity_rows(device: torch.device) -> list[dict[str, Any]]:
    model, probes, labels = trained_demo_model(device)
    names = [n for n in method_names() if n not in ("activations", "filters")]
    rows = []
    for layers in (1, 2):
        for r in sanity_check(model, probes, names, labels=labels, layers=layers, warn=False):
            rows.append(
                {
                    "layers": ",".join(r.layers),
                    "method": r.method,
                    "rank_corr": r.correlation,
                    "verdict": "pass" if r.passed else ("error" if r.error else "FAIL"),
                }
            )
    return rows


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--skip-sanity", action="store_true")
    args = parser.parse_args()
    apply_threads(args.threads)
    device = pick_device(args.device)
    print_header("bench_methods: cost per evaluation, quality measures, sanity check", device)
    started = time.perf_counter()
    rows = time_methods("digits_cnn 1x32x32", demo_model(device), (1, 32, 32), args)
    torch.manual_seed(0)
    rows += time_methods("resnet18 3x64x64", resnet18().to(device).eval(), (3, 64, 64), args)
    print(fmt_table(rows))
    quality = time_quality(demo_model(device), args)
    print(fmt_table(quality))
    sanity = [] if args.skip_sanity else sanity_rows(device)
    if sanity:
        print(fmt_table(sanity))
    digits = {r["method"]: r["ms"] for r in rows if r["model"].startswith("digits") and r["ms"] != "-"}
    fails = [r["method"] for r in sanity if r["layers"].count(",") == 0 and r["verdict"] != "pass"]
    print(
        f"SUMMARY methods on {device.type} ({time.perf_counter() - started:.0f} s): digits_cnn ms per evaluation "
        f"saliency {digits.get('saliency', float('nan')):.1f}, lime {digits.get('lime', float('nan')):.0f}; quality "
        f"deletion+insertion {max(q['passes_%'] for q in quality):.0f} % of an evaluation at most, sparseness+entropy "
        f"{max(q['pure_%'] for q in quality):.1f} %; sanity check (top layer) failures: {fails or 'none'}"
    )


if __name__ == "__main__":
    main()
