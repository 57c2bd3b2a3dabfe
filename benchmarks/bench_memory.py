"""Peak extra memory of the monitor's Integrated Gradients vs one training step of the same model.

Each measurement runs in a fresh subprocess (so earlier allocations do not hide later ones), ``--repeats``
times, and the medians are compared:

- ``ig``: resnet18 (3x64x64, random init), P=64 probes, 32 steps (fixed), the monitor's path (Captum's IG in
  passes of at most ``--max-batch`` samples: by default the training step's batch, as the monitor caps IG at
  the training batch size; with ``--max-batch 0`` IG's own default of 64 samples): the first call of the
  process. A second call is shown for information only (on CPU the allocator keeps memory freed by the first
  call resident, so its RSS delta understates).
- ``train``: the first training step of the process (plain SGD without momentum, so no optimiser state is
  created; cross-entropy, batch 64): activations, parameter gradients and the update.

Both kinds first run one no-grad forward at batch 2 (kernels, thread pools) and then measure. CPU: extra =
peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) minus the RSS before. CUDA: extra =
``torch.cuda.max_memory_allocated`` minus ``torch.cuda.memory_allocated`` before.

    python benchmarks/bench_memory.py [--device cuda] [--repeats 5] [--probes 64] [--steps 32]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from _common import (
    MODELS,
    apply_threads,
    base_parser,
    make_images,
    make_model,
    monitor_explain,
    monitor_setup,
    pick_device,
    print_header,
    reset_peak_rss,
    vm_hwm_bytes,
    vm_rss_bytes,
)

from lightning_xai.explain import IntegratedGradients

MB = 1 << 20


class Peak:
    """Peak extra memory of a block: RSS on CPU, allocated bytes on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> Peak:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            if not reset_peak_rss():
                raise RuntimeError("cannot reset VmHWM (/proc/self/clear_refs): run on Linux >= 4.0")
            self.before = vm_rss_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.extra = torch.cuda.max_memory_allocated(self.device) - self.before
        else:
            self.extra = vm_hwm_bytes() - self.before


def child(
    kind: str, model_name: str, probes: int, steps: int, device: torch.device, max_batch: int | None
) -> dict[str, object]:
    shape = MODELS[model_name][1]
    model = make_model(model_name, device)
    warm = torch.randn(2, *shape, device=device)
    with torch.no_grad():  # load the kernels / thread pools once, in both kinds
        model.eval()(warm)
    model.train()
    if kind == "train":
        images, labels = make_images(probes, shape, seed=2)
        images, labels = images.to(device), labels.to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        with Peak(device) as peak:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return {"train_step_mb": peak.extra / MB}
    images, labels = make_images(probes, shape, seed=1)
    explainer = IntegratedGradients(n_steps=steps, internal_batch_size=max_batch or None)
    monitor_setup(model, explainer, images)
    with Peak(device) as first:
        monitor_explain(model, explainer, images, labels)
    with Peak(device) as second:
        monitor_explain(model, explainer, images, labels)
    return {
        "ig_first_mb": first.extra / MB,
        "ig_steady_mb": second.extra / MB,
        "batch": float(explainer.last_batch_size or 0),
    }


def main() -> None:
    parser = base_parser((__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=list(MODELS))
    parser.add_argument("--probes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="IG max_batch (default: the training step's batch, --probes, as the monitor caps IG at the training "
        "batch size); 0 for no cap",
    )
    parser.add_argument("--child", choices=["ig", "train"], default=None, help=argparse_suppress())
    args = parser.parse_args()
    if args.max_batch is None:
        args.max_batch = args.probes
    apply_threads(args.threads)
    device = pick_device(args.device)
    if args.child:
        print(json.dumps(child(args.child, args.model, args.probes, args.steps, device, args.max_batch)))
        return
    print_header(
        f"memory: monitor IG (P={args.probes}, {args.steps} steps) vs one training step (batch "
        f"{args.probes}), {args.model}",
        device,
    )
    results: dict[str, list[dict[str, Any]]] = {"ig": [], "train": []}
    for _ in range(args.repeats):
        for kind in ("train", "ig"):  # interleaved, each in a fresh process
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                kind,
                "--model",
                args.model,
                "--probes",
                str(args.probes),
                "--steps",
                str(args.steps),
                "--device",
                device.type,
            ]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if args.max_batch:
                cmd += ["--max-batch", str(args.max_batch)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results[kind].append(json.loads(out))
            print(f"   {kind}: {results[kind][-1]}", flush=True)

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    train = med("train", "train_step_mb")
    first, steady = med("ig", "ig_first_mb"), med("ig", "ig_steady_mb")
    ratio = first / train
    print(f"   IG batch {med('ig', 'batch'):.0f} samples per pass")
    unit = "allocated" if device.type == "cuda" else "RSS"
    print(
        f"SUMMARY memory ({unit}, medians of {args.repeats} fresh processes) on {device.type}: monitor IG P="
        f"{args.probes} x {args.steps} steps peak extra {first:.0f} MB (first call; second call "
        f"{steady:.0f}) vs first training step at batch {args.probes} {train:.0f} MB -> ratio {ratio:.2f} (<= 1.00 "
        f"wanted){f' [IG max_batch={args.max_batch}]' if args.max_batch else ' [IG default batch]'}"
    )


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
