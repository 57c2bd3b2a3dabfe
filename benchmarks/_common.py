"""Shared pieces of the benchmark scripts: models, data, timers, the monitor's own explain path, memory probes.

Every script measures what it compares within one run (ratios, not absolute times: on a shared 2-core machine
absolute times drift 10-40 % between runs), repeats each measurement and reports medians. Scripts run on CUDA
when it is present (``--device cpu`` forces the CPU) and end with exactly one ``SUMMARY`` line.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.explain import Explainer, Explanation
from lightning_xai.explain.forward import model_forward
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.explain.run import explain_probes

# ------------------------------------------------------------------------------------------------ models


class SmallCNN(nn.Module):
    """A small CNN for 3x32x32 inputs (CIFAR-sized): 3 conv-bn-relu blocks, 2 poolings, a linear head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's resnet18, random initialisation (no download)."""
    from torchvision.models import resnet18 as tv_resnet18

    return tv_resnet18(weights=None, num_classes=num_classes)


#: name -> (constructor, input shape C, H, W)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
    "resnet18": (resnet18, (3, 64, 64)),
    "small_cnn": (SmallCNN, (3, 32, 32)),
}


def make_model(name: str, device: torch.device, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    build, _ = MODELS[name]
    return build().to(device)


def make_images(n: int, shape: Sequence[int], seed: int = 0, num_classes: int = 10) -> tuple[Tensor, Tensor]:
    """Generated images: class-dependent coloured blobs on noise, so a model can learn something quickly."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = 0.3 * torch.rand(n, c, h, w, generator=g)
    size = max(2, h // 4)
    for i, label in enumerate(labels.tolist()):
        r, col = divmod(label, 4)
        r0 = min(h - size, (r * h) // 3)
        c0 = min(w - size, (col * w) // 4)
        images[i, label % c, r0 : r0 + size, c0 : c0 + size] += 0.7
    return (images - 0.5) / 0.25, labels


# ------------------------------------------------------------------------------------------------ timing


def pick_device(arg: str | None = None) -> torch.device:
    if arg:
        return torch.device(arg)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median_time(fn: Callable[[], Any], device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        timed(fn, device)
    return statistics.median(timed(fn, device) for _ in range(repeats))


def input_grad_pass(model: nn.Module, x: Tensor, targets: Tensor) -> None:
    """One forward + backward with respect to the input only (what IG and the monitor need)."""
    x = x.detach().requires_grad_(True)
    out = model(x)
    (grad,) = torch.autograd.grad(out.gather(1, targets.view(-1, 1)).sum(), x)
    del grad


@contextmanager
def frozen_eval(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """The same context the monitor explains in (eval, frozen parameters, grad on, RNGs isolated)."""
    with training_state_guard(model, device):
        yield model


def throughput_curve(
    model: nn.Module,
    shape: Sequence[int],
    device: torch.device,
    batches: Sequence[int],
    repeats: int = 5,
    forward_only: bool = False,
) -> dict[int, float]:
    """Samples per second of fwd+bwd w.r.t. the input (or forward only, no grad) at each batch size."""
    curve: dict[int, float] = {}
    with frozen_eval(model, device):
        for batch in batches:
            x = torch.randn(batch, *shape, device=device)
            t = torch.zeros(batch, dtype=torch.long, device=device)
            if forward_only:

                def run(x: Tensor = x) -> None:
                    with torch.no_grad():
                        model(x)

            else:

                def run(x: Tensor = x, t: Tensor = t) -> None:
                    input_grad_pass(model, x, t)

            curve[batch] = batch / median_time(run, device, repeats=repeats)
    return curve


# ------------------------------------------------------------------------------------ the monitor's path


def monitor_explain(model: nn.Module, explainer: Explainer, images: Tensor, labels: Tensor) -> Explanation:
    """What ``AttributionMonitor`` runs for one method each evaluation (target="label"):
    :func:`lightning_xai.explain.run.explain_probes` (training-state guard, float32 forward, the
    shared prediction pass, the method, the finiteness check)."""
    done = explain_probes(model, images, labels, [explainer])
    if explainer.name not in done.results:
        raise RuntimeError(f"{explainer.name} failed: {done.errors}")
    return done.results[explainer.name]


def monitor_setup(model: nn.Module, explainer: Explainer, images: Tensor) -> None:
    """What ``AttributionMonitor._prepare`` runs once per fit for each method."""
    device = next(model.parameters()).device
    with training_state_guard(model, device), model_forward(model) as forward:
        explainer.setup(model, forward, images[:1].to(device).clone())


# ------------------------------------------------------------------------------------------------ memory


def vm_hwm_bytes() -> int:
    """Peak resident set size of this process (``VmHWM``), in bytes; 0 where /proc is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def vm_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------ output


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--neighbours",
        type=int,
        default=0,
        help="CPU-bound neighbour processes running during the measurement (contention, like busy dataloader "
        "workers); the script starts and stops them itself",
    )
    return parser


def _spin(parent: int) -> None:  # pragma: no cover - runs in the neighbour processes
    import os

    x, n = 0, 0
    while True:
        x, n = (x * 1103515245 + 12345) % 2147483648, n + 1
        if n % 5_000_000 == 0 and os.getppid() != parent:  # the benchmark was killed: do not spin on as an orphan
            return


@contextmanager
def neighbours(count: int) -> Iterator[None]:
    """``count`` CPU-bound processes (busy integer loops) for the duration of the block."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_spin, args=(os.getpid(),), daemon=True) for _ in range(count)]
    for proc in procs:
        proc.start()
    if procs:
        time.sleep(1.0)  # let them take their cores
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join()


def apply_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def describe_machine(device: torch.device) -> str:
    import captum
    import lightning

    what = f"{platform.machine()} {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        what += f", {torch.cuda.get_device_name(device)}"
    return (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%MZ} | {what} | torch {torch.__version__}, "
        f"lightning {lightning.__version__}, captum {captum.__version__}, python {sys.version.split()[0]} | "
        f"load {os.getloadavg()[0]:.2f}"
    )


def print_header(title: str, device: torch.device) -> None:
    print(f"# {title}")
    print(f"# {describe_machine(device)}")


def fmt_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    cells = [[_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


# ------------------------------------------------------------------------------------------------ training


def lightning_module(model_name: str = "resnet18", seed: int = 0, lr: float = 0.05) -> Any:
    """A LightningModule around one of :data:`MODELS`: cross-entropy, SGD with momentum, val loss/accuracy."""
    import lightning.pytorch as L

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.net = MODELS[model_name][0]()

        def forward(self, x: Tensor) -> Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self(x)
            self.log("val_loss", nn.functional.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=lr, momentum=0.9)

    return Classifier()


def loaders(model_name: str, train_size: int, val_size: int, batch_size: int = 64) -> tuple[Any, Any]:
    from torch.utils.data import DataLoader, TensorDataset

    shape = MODELS[model_name][1]
    x, y = make_images(train_size + val_size, shape, seed=7)
    train = TensorDataset(x[:train_size], y[:train_size])
    val = TensorDataset(x[train_size:], y[train_size:])
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)),
        DataLoader(val, batch_size=batch_size),
    )


def trainer_kwargs(device: torch.device, epochs: int, log_dir: str | None) -> dict[str, Any]:
    from lightning.pytorch.loggers import TensorBoardLogger

    return {
        "max_epochs": epochs,
        "accelerator": "gpu" if device.type == "cuda" else "cpu",
        "devices": 1,
        "logger": TensorBoardLogger(log_dir, name="bench") if log_dir else False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": False,
    }


def quiet_lightning() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def monitor_arguments(spec: dict[str, Any]) -> dict[str, Any]:
    """``AttributionMonitor`` arguments from a JSON-able ``spec`` (``--extra``, ``--monitor-kwargs``): mappings under
    ``drift``, ``display`` and ``budget`` become :class:`~lightning_xai.DriftPolicy`, :class:`~lightning_xai.Display`
    and :class:`~lightning_xai.Budget`; ``{"integrated_gradients": {...}}`` in ``methods`` an ``IntegratedGradients``
    with those options (e.g. ``{"methods": ["gradcam", {"integrated_gradients": {"n_steps": 32}}]}``)."""
    from lightning_xai import Budget, Display, DriftPolicy, IntegratedGradients

    out = dict(spec)
    for key, kind in (("drift", DriftPolicy), ("display", Display), ("budget", Budget)):
        if isinstance(out.get(key), dict):
            out[key] = kind(**out[key])
    if "methods" in out:
        methods = [out["methods"]] if isinstance(out["methods"], (str, dict)) else out["methods"]
        out["methods"] = [
            IntegratedGradients(**m["integrated_gradients"]) if isinstance(m, dict) else m for m in methods
        ]
    return out
