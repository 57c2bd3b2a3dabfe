"""The whole monitor's cost as the user pays it: wall time of ``Trainer.fit`` with the monitor minus without, per
evaluated epoch, against the forward+backward passes its explanations need.

Settings (``--model resnet18``, the default): torchvision resnet18 (random init, no download) on 3x64x64 generated
images, 16 probes from the validation data, Grad-CAM and Integrated Gradients with 32 steps, 2 torch threads, 1
training batch (64 images) per epoch, 64 validation images, a ``TensorBoardLogger``, the monitor's defaults otherwise.
``--model demo``: the demo's setting (``make demo``: the small digits CNN of ``examples/shortcut``, 1x32x32 decoy
digits, one probe per class with its decoy mask, the monitor at its defaults: IG's automatic step count).

Per round (``--rounds``, at least 3; the order of the two fits alternates):

- the passes needed: ``P x (steps + 2)`` samples (IG's steps, Grad-CAM's pass and the shared prediction pass, all
  valued as forward+backward with respect to the input) at the model's best measured input-gradient throughput
  (eval mode, frozen parameters, best of batch 16/32/64/128 and of torch's threads and one thread, measured before
  and after the round's fits (mean), under the same contention);
- the extra time: ``(fit with the monitor - fit without) / evaluated epochs``, both fits with the same data, logger
  and epochs (the setup dry run and the final flush of the background writer included: what the user waits for);
- efficiency = passes needed / extra time (1.0: the monitor costs exactly its passes).

The breakdown by stage per evaluation (medians over the evaluations after the first), from the scalars the monitor
logs (``xai/<method>/seconds``; prediction = the explanations' time minus the methods') and light instrumentation
(wrappers around the monitor's drift step, the media step and its rendering, the scalars it logs (``pl_module.log``
for the monitored keys, the loggers directly for the rest), and the pictures' own clocks): training thread —
prediction, each method, drift, rendering (the tiles, torch), the rest of the media step (tables, queueing),
scalars; writer thread (CPU time, overlapping training) — composing the pictures (numpy, Pillow), encoding them
(JPEG), writing (the rest of its busy time); TensorBoard's own writer thread (CPU time of its record writer: each
record's checksum and the file writes; the fit's total per evaluation, ``tensorboard*``).
``rest of extra %``: everything besides the explanations (prediction pass and methods) as a share of the extra
time the user pays, ``(extra - explain) / extra``; ``rest %``: the same share of the evaluation's own cost
(``cost_seconds``: its wall time on the training thread plus the writer's CPU time, stamped before the scalars are
logged); ``rest incl. scalars %``: the same with the scalars' time and TensorBoard's writer thread added to both sides
(the figure to quote: it counts everything the monitor does besides its explanations, and what it makes TensorBoard
do; before 2026-12-07 it left TensorBoard's thread out).

``--neighbours N`` starts N CPU-bound processes for the whole measurement. Needs quiet cores for numbers worth
quoting; one line ``SUMMARY`` at the end.

    python benchmarks/bench_monitor.py [--model resnet18|demo] [--rounds 3] [--epochs 6] [--neighbours 2]
"""

from __future__ import annotations

import inspect
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _common import (
    apply_threads,
    base_parser,
    lightning_module,
    make_images,
    monitor_arguments,
    neighbours,
    pick_device,
    print_header,
    quiet_lightning,
    throughput_curve,
)
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/ for --model demo

from lightning_xai import AttributionMonitor, Display  # noqa: E402

BATCHES = (16, 32, 64, 128)


class Setting:
    """One benchmark setting: the LightningModule, its loaders, the monitor and the model for the throughput."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.demo = args.model == "demo"
        if self.demo:
            from examples.shortcut.decoy_digits import DecoyDigits, DecoySpec
            from examples.shortcut.scenario import probe_indices

            spec = DecoySpec()
            self.train_set, self.val_set = (
                DecoyDigits("train", spec=spec, seed=0),
                DecoyDigits("val", spec=spec, seed=0),
            )
            idx = probe_indices(self.val_set.labels, 1, 0)
            self.probes = (self.val_set.images[idx], self.val_set.labels[idx])
            self.masks: torch.Tensor | None = self.val_set.masks[idx]
            self.shape = tuple(self.val_set.images.shape[1:])
        else:
            x, y = make_images(64 * args.train_batches + 64, (3, 64, 64), seed=7)
            self.train_set = TensorDataset(x[:-64], y[:-64])
            self.val_set = TensorDataset(x[-64:], y[-64:])
            self.probes = (x[-64:][: args.probes], y[-64:][: args.probes])
            self.masks = None
            self.shape = (3, 64, 64)

    def module(self) -> Any:
        if self.demo:
            from examples.shortcut.scenario import DigitsCNN

            torch.manual_seed(0)
            return DigitsCNN()
        return lightning_module("resnet18")

    def loaders(self) -> tuple[DataLoader, DataLoader]:
        train = DataLoader(self.train_set, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
        return train, DataLoader(self.val_set, batch_size=256)

    def monitor(self) -> AttributionMonitor:
        kwargs: dict[str, Any] = {"probes": self.probes, **monitor_arguments(json.loads(self.args.monitor_kwargs))}
        if self.masks is not None:
            kwargs["display"] = replace(kwargs.get("display") or Display(), probe_masks=self.masks)
        if not self.demo and self.args.ig_steps:
            from lightning_xai.explain import IntegratedGradients

            params = inspect.signature(IntegratedGradients).parameters
            steps = "steps" if "steps" in params else "n_steps"
            kwargs.setdefault("methods", ["gradcam", IntegratedGradients(**{steps: self.args.ig_steps})])
        return AttributionMonitor(**kwargs)


class Stages:
    """Wall time of wrapped functions, per evaluation; the pictures created, per evaluation."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.pictures: list[Any] = []
        self.tensorboard_seconds = 0.0  # CPU time of TensorBoard's own record writer (its thread), the whole fit
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        """Time ``owner.name`` as ``stage`` (skipped when the attribute does not exist in this version)."""
        original = getattr(owner, name, None)
        if original is None:
            print(f"   (no {owner.__name__}.{name} in this version: stage {stage!r} not measured)")
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.current[stage] = self.current.get(stage, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    @contextmanager
    def installed(self) -> Iterator[None]:
        import lightning_xai._trainer as trainer_module
        import lightning_xai.monitor as monitor_module
        import lightning_xai.visualize.log as log_module
        import lightning_xai.visualize.media as media_module

        self.wrap(monitor_module, "measure", "drift")
        self.wrap(trainer_module, "log_epoch_scalars", "scalars")
        self.wrap(log_module.MediaLogger, "log", "media step")
        self.wrap(log_module, "evaluation_media", "rendering")
        picture = getattr(media_module, "Picture", None)
        if picture is not None:
            init = picture.__init__

            def keep(this: Any, *args: Any, **kwargs: Any) -> None:
                init(this, *args, **kwargs)
                self.pictures.append(this)

            picture.__init__ = keep
            self._undo.append(lambda: setattr(picture, "__init__", init))
        from tensorboard.summary.writer.record_writer import RecordWriter

        write = RecordWriter.write

        def counted(this: Any, data: bytes) -> None:  # on TensorBoard's writer thread: its CPU time
            start = time.thread_time()
            try:
                write(this, data)
            finally:
                self.tensorboard_seconds += time.thread_time() - start

        RecordWriter.write = counted  # type: ignore[method-assign]
        self._undo.append(lambda: setattr(RecordWriter, "write", write))
        try:
            yield
        finally:
            for undo in reversed(self._undo):
                undo()
            self._undo.clear()


def one_fit(setting: Setting, monitored: bool, log_dir: str, stages: Stages | None = None) -> dict[str, Any]:
    """Run one fit; its wall time and, with the monitor, one dict of stage times per evaluation."""
    import lightning.pytorch as L
    from lightning.pytorch.loggers import TensorBoardLogger

    per_eval: list[dict[str, float]] = []
    monitor = setting.monitor() if monitored else None

    class Split(L.Callback):  # runs after the monitor's hooks (callbacks run in order)
        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if stages is not None:
                pictures = stages.pictures
                per_eval.append({**stages.current, "_pictures": pictures})  # type: ignore[dict-item]
                stages.current, stages.pictures = {}, []

    train, val = setting.loaders()
    trainer = L.Trainer(
        max_epochs=setting.args.epochs,
        limit_train_batches=setting.args.train_batches,
        accelerator="gpu" if setting.args.device == "cuda" else "cpu",
        devices=1,
        logger=TensorBoardLogger(log_dir, name="bench"),
        callbacks=[c for c in (monitor, Split()) if c is not None],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(setting.module(), train, val)
    wall = time.perf_counter() - start
    out: dict[str, Any] = {"wall": wall, "evaluations": 0}
    out["tensorboard"] = stages.tensorboard_seconds if stages is not None else 0.0
    if monitor is not None:
        history = monitor.history
        out["evaluations"] = len(history)
        writer = getattr(getattr(monitor, "media", None), "writer", None)
        out["writer_busy"] = float(getattr(writer, "busy_seconds", 0.0))
        out["setup"] = float(monitor.setup_check.seconds)  # the dry run, once per fit
        out["records"] = [(h, per_eval[i] if i < len(per_eval) else {}) for i, h in enumerate(history)]
    return out


def best_throughput(model: Any, shape: Any, device: torch.device) -> float:
    """The model's best input-gradient samples/s now: over the batch sizes, with torch's threads and with one thread
    (on busy cores one thread is faster, and the monitor then runs its passes with one)."""
    from lightning_xai.explain.threads import torch_threads

    best = max(throughput_curve(model, shape, device, BATCHES, repeats=3).values())
    if device.type != "cpu" or torch.get_num_threads() == 1:
        return best
    with torch_threads(1):
        return max(best, *throughput_curve(model, shape, device, BATCHES, repeats=3).values())


def stage_rows(records: list[tuple[Any, dict[str, Any]]], methods: list[str]) -> dict[str, float]:
    """Medians over the evaluations after the first: seconds per stage, and the rest's share of the cost."""
    later = records[1:] or records
    rows: list[dict[str, float]] = []
    for record, timed in later:
        scalars = record.scalars
        method_s = {m: float(scalars.get(f"xai/{m}/seconds", 0.0)) for m in methods}
        row = {"prediction": max(0.0, record.explain_seconds - sum(method_s.values()))}
        row.update(method_s)
        row["drift"] = timed.get("drift", float("nan"))
        rendering = timed.get("rendering", float("nan"))
        row["rendering"] = rendering
        row["media rest"] = timed.get("media step", float("nan")) - rendering
        row["scalars"] = timed.get("scalars", float("nan"))
        pictures = timed.get("_pictures", [])
        row["compose*"] = sum(p.compose_seconds for p in pictures) if pictures else float("nan")  # type: ignore[union-attr]
        row["encode*"] = sum(p.encode_seconds for p in pictures) if pictures else float("nan")  # type: ignore[union-attr]
        row["explain"] = record.explain_seconds
        row["cost"] = record.cost_seconds or float("nan")
        row["rest %"] = 100.0 * (row["cost"] - record.explain_seconds) / row["cost"]
        # the scalars are logged after the cost is stamped: counted here too (their background share is in the cost)
        whole = row["cost"] + (row["scalars"] if row["scalars"] == row["scalars"] else 0.0)
        row["rest incl. scalars %"] = 100.0 * (whole - record.explain_seconds) / whole
        row["rest s"] = whole - record.explain_seconds  # everything besides the explanations, in seconds
        steps = scalars.get("xai/integrated_gradients/n_steps")
        row["ig steps"] = float(steps) if steps is not None else float("nan")
        rows.append(row)
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    parser = base_parser((__doc__ or "").splitlines()[0])
    parser.set_defaults(threads=2)
    parser.add_argument("--model", choices=("resnet18", "demo"), default="resnet18")
    parser.add_argument("--rounds", type=int, default=3, help="with/without pairs (median over them)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-batches", type=int, default=1, help="training batches (of 64) per epoch")
    parser.add_argument("--probes", type=int, default=16, help="probes (resnet18; the demo has one per class)")
    parser.add_argument("--ig-steps", type=int, default=32, help="IG's steps (resnet18; the demo: automatic)")
    parser.add_argument("--monitor-kwargs", default="{}", help="JSON of further AttributionMonitor arguments")
    parser.add_argument("--writer-nice", type=int, default=None, help="the writer thread's niceness (default: 10)")
    args = parser.parse_args()
    apply_threads(args.threads)
    quiet_lightning()
    device = pick_device(args.device or "cpu")
    if args.writer_nice is not None:
        import lightning_xai.visualize.writer as writer_module

        writer_module.NICENESS = args.writer_nice
    setting = Setting(args)
    print_header(f"whole monitor, {args.model}: fit with - without per evaluated epoch vs the passes needed", device)
    from _common import MODELS

    throughput_model = (setting.module() if setting.demo else MODELS["resnet18"][0]()).to(device)
    results: list[dict[str, Any]] = []
    with neighbours(args.neighbours), tempfile.TemporaryDirectory() as tmp:
        one_fit(setting, True, f"{tmp}/warmup")  # imports, first-call costs
        for r in range(max(1, args.rounds)):
            before = best_throughput(throughput_model, setting.shape, device)
            stages = Stages()
            fits: dict[bool, dict[str, Any]] = {}
            for monitored in (True, False) if r % 2 == 0 else (False, True):
                if monitored:
                    with stages.installed():
                        fits[True] = one_fit(setting, True, f"{tmp}/r{r}-with", stages)
                else:
                    plain = Stages()  # TensorBoard's thread writes Lightning's own metrics here too
                    with plain.installed():
                        fits[False] = one_fit(setting, False, f"{tmp}/r{r}-without", plain)
            after = best_throughput(throughput_model, setting.shape, device)
            best = (before + after) / 2  # the load may change during the round: both sides of the fits
            records = fits[True]["records"]
            keys = {k for h, _ in records for k in h.scalars}
            methods = sorted(k.split("/")[1] for k in keys if k.endswith("/seconds") and k.count("/") == 2)
            stage = stage_rows(records, methods)
            probes = int(setting.probes[0].shape[0])
            steps = stage["ig steps"] if stage["ig steps"] == stage["ig steps"] else 0.0
            needed = probes * (steps + 2) / best
            evaluations = fits[True]["evaluations"]
            extra = (fits[True]["wall"] - fits[False]["wall"]) / max(1, evaluations)
            busy = fits[True]["writer_busy"] / max(1, evaluations)
            stage["write*"] = busy - (stage["compose*"] if stage["compose*"] == stage["compose*"] else 0.0)
            stage["write*"] -= stage["encode*"] if stage["encode*"] == stage["encode*"] else 0.0
            # TensorBoard's own writer thread (each record's checksum, the file writes): outside the monitor's cost
            # stamp, but the user pays it; counted in the rest (per evaluation: the fit's total less the unmonitored
            # fit's, which writes Lightning's own metrics, / evaluations)
            stage["tensorboard*"] = (fits[True]["tensorboard"] - fits[False]["tensorboard"]) / max(1, evaluations)
            stage["rest s"] += stage["tensorboard*"]
            stage["rest incl. scalars %"] = 100.0 * stage["rest s"] / (stage["rest s"] + stage["explain"])
            # what the user pays besides the explanations (prediction pass and methods), as a share of the extra time
            stage["rest of extra %"] = 100.0 * (extra - stage["explain"]) / extra if extra > 0 else float("nan")
            row = {
                "round": r,
                "best sps": best,
                "needed s": needed,
                "with s": fits[True]["wall"],
                "without s": fits[False]["wall"],
                "evals": evaluations,
                "extra s/eval": extra,
                "setup s": fits[True]["setup"],
                "efficiency": needed / extra if extra > 0 else float("inf"),
                **stage,
            }
            results.append(row)
            print("   " + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    med = {k: statistics.median(float(r[k]) for r in results) for k in results[0] if k != "round"}
    effs = " ".join(f"{r['efficiency']:.2f}" for r in results)
    train_thread = ["prediction", *methods, "drift", "rendering", "media rest", "scalars"]
    writer_thread = ["compose*", "encode*", "write*", "tensorboard*"]
    setting_text = (
        "resnet18 3x64x64, P=16, IG 32 steps" if not setting.demo else f"demo digits CNN, P={probes}, IG auto"
    )
    print(
        f"SUMMARY monitor {setting_text}, {torch.get_num_threads()} torch threads, {args.train_batches} training "
        f"batch/epoch, {args.neighbours} neighbours, {len(results)} rounds x {args.epochs} epochs: efficiency (passes "
        f"needed / extra fit time per evaluated epoch) {med['efficiency']:.2f} (rounds: {effs}); extra "
        f"{med['extra s/eval']:.2f} s/eval vs {med['needed s']:.2f} s of passes ({med['best sps']:.0f} samples/s, "
        f"IG {med['ig steps']:.0f} steps); everything besides the explanations {med['rest of extra %']:.1f} % of the "
        f"extra time ({med['rest %']:.1f} % of the evaluation's own cost, {med['rest incl. scalars %']:.1f} % with the "
        f"scalars it logs: {1e3 * med['rest s']:.1f} ms besides {1e3 * med['explain']:.1f} ms of explanations) | per "
        "evaluation, training thread: "
        + ", ".join(f"{k} {1e3 * med[k]:.1f} ms" for k in train_thread)
        + " | writer threads (CPU; TensorBoard's own: its checksums and file writes): "
        + ", ".join(f"{k.rstrip('*')} {1e3 * med[k]:.1f} ms" for k in writer_thread)
    )


if __name__ == "__main__":
    main()
