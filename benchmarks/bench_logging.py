"""Logging cost of the monitor: time the training thread is blocked per epoch, and event-file bytes per epoch.

A short ``Trainer.fit`` (resnet18 on 3x64x64 generated images, a small training set: the logging cost does not
depend on it) with ``AttributionMonitor()`` at defaults and a ``TensorBoardLogger``. Instrumented, per epoch:

- ``submit``: time inside ``BackgroundWriter.submit`` (queueing the PNG-encoding/event-writing jobs);
- ``log_media``: the whole media step on the training thread (rendering the overlay grids on the device, the
  one uint8 copy to the CPU, the prediction table, the submits);
- ``explain``: the explanations themselves, for scale (``history[-1].explain_seconds``);
- at the end of fit, the time ``on_fit_end`` waits for the background queue (once per fit, not per epoch).

Bytes: the event file is read back record by record and the records carrying ``xai/*`` tags are summed per
epoch (the probe grid is logged once, in the first evaluated epoch, so epochs after the first are the
steady-state figure). The first epoch is excluded from the medians of the timings (first-call costs).

    python benchmarks/bench_logging.py [--device cuda] [--repeats 5] [--monitor-kwargs '{"ig_steps": 8}']
"""

from __future__ import annotations

import json
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    apply_threads,
    base_parser,
    fmt_table,
    lightning_module,
    loaders,
    pick_device,
    print_header,
    quiet_lightning,
    trainer_kwargs,
)

from lightning_xai import AttributionMonitor


def _timed(record: list[float], fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record.append(time.perf_counter() - start)

    return wrapper


def xai_bytes_per_epoch(log_dir: Path, epoch_steps: list[int]) -> list[int]:
    """Bytes of the event-file records carrying ``xai/*`` tags, per evaluated epoch.

    A record belongs to the first evaluation whose global step is >= its step (``epoch_steps`` ascending).
    """
    from tensorboard.compat.proto import event_pb2

    per_epoch = [0] * len(epoch_steps)
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            record = data[offset + 12 : offset + 12 + length]
            size = 8 + 4 + length + 4
            offset += size
            event = event_pb2.Event()
            event.ParseFromString(record)
            if any(v.tag.startswith("xai/") for v in event.summary.value):
                index = next((i for i, s in enumerate(epoch_steps) if event.step <= s), len(epoch_steps) - 1)
                per_epoch[index] += size
    return per_epoch


def main() -> None:
    parser = base_parser((__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--train-size", type=int, default=256)
    parser.add_argument("--monitor-kwargs", default="{}", help="JSON of AttributionMonitor arguments")
    args = parser.parse_args()
    apply_threads(args.threads)
    quiet_lightning()
    device = pick_device(args.device)
    kwargs = json.loads(args.monitor_kwargs)
    print_header(
        f"logging: training thread blocked per epoch, event bytes per epoch; monitor {kwargs or 'defaults'}", device
    )
    import lightning.pytorch as L

    epochs = args.repeats + 1
    with tempfile.TemporaryDirectory() as tmp:
        monitor = AttributionMonitor(**kwargs)
        submits: list[float] = []
        media: list[float] = []
        fit_end: list[float] = []
        monitor.media.writer.submit = _timed(submits, monitor.media.writer.submit)  # type: ignore[method-assign]
        monitor._log_media = _timed(media, monitor._log_media)  # type: ignore[method-assign]
        monitor.on_fit_end = _timed(fit_end, monitor.on_fit_end)  # type: ignore[method-assign]
        per_epoch_submit: list[float] = []
        per_epoch_count: list[int] = []

        class Split(L.Callback):
            """Cut the submit timings into epochs (runs after the monitor's validation-epoch-end hook)."""

            def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                per_epoch_submit.append(sum(submits))
                per_epoch_count.append(len(submits))
                submits.clear()

        train, val = loaders(args.model, args.train_size, 128)
        trainer = L.Trainer(callbacks=[monitor, Split()], **trainer_kwargs(device, epochs, tmp))
        trainer.fit(lightning_module(args.model), train, val)
        explain = [h["explain_seconds"] for h in monitor.history]
        per_epoch_bytes = xai_bytes_per_epoch(Path(tmp), [h["global_step"] for h in monitor.history])
    rows = [
        {
            "epoch": e,
            "submits": per_epoch_count[e],
            "submit_ms": 1e3 * per_epoch_submit[e],
            "log_media_ms": 1e3 * media[e],
            "explain_ms": 1e3 * explain[e],
            "xai_kB": per_epoch_bytes[e] / 1e3,
        }
        for e in range(epochs)
    ]
    print(fmt_table(rows))
    later = rows[1:]
    submit_ms = statistics.median(r["submit_ms"] for r in later)
    media_ms = statistics.median(r["log_media_ms"] for r in later)
    kb = statistics.median(r["xai_kB"] for r in later)
    print(f"   on_fit_end waited {1e3 * sum(fit_end):.1f} ms for the background queue (once per fit)")
    print(
        f"SUMMARY logging (median of epochs 1..{epochs - 1}) on {device.type}: training thread blocked by submits "
        f"{submit_ms:.2f} ms/epoch, whole media step (render + copy + submit) {media_ms:.2f} ms/epoch (<= 5 ms "
        f"wanted); event file +{kb:.1f} kB/epoch of xai/* records (first epoch {rows[0]['xai_kB']:.1f} kB, with "
        f"the probe grid); "
        f"explain {statistics.median(r['explain_ms'] for r in later):.0f} ms/epoch for scale"
    )


if __name__ == "__main__":
    main()
