"""Export the AttributionMonitor's image grids from a TensorBoard event file as PNG files.

TensorBoard stores logged images already encoded (the monitor's are JPEG); each is decoded and saved as PNG.

    python examples/export_grids.py logs/quickstart/version_0 --out docs/images --prefix quickstart

writes ``quickstart_probes.png``, ``quickstart_gradcam.png`` and ``quickstart_integrated_gradients.png``.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

#: TensorBoard tag -> file name suffix
DEFAULT_TAGS: dict[str, str] = {
    "xai/probes": "probes",
    "xai/gradcam/overlay": "gradcam",
    "xai/integrated_gradients/overlay": "integrated_gradients",
}


def latest_event_file(logdir: str | Path) -> Path:
    """The newest ``events.out.tfevents.*`` file of a logger in ``logdir`` or below it (or ``logdir`` itself if a
    file)."""
    logdir = Path(logdir)
    if logdir.is_file():
        return logdir
    files = sorted(  # not the dashboard's summary runs (xai-score, xai-threshold, xai-alert): they hold no images
        (f for f in logdir.rglob("events.out.tfevents.*") if not f.parent.name.startswith("xai-")),
        key=lambda p: p.stat().st_mtime,
    )
    if not files:
        raise FileNotFoundError(f"no TensorBoard event file under {logdir}")
    return files[-1]


def export_grids(
    logdir: str | Path,
    out_dir: str | Path,
    prefix: str = "quickstart",
    tags: dict[str, str] | None = None,
    index: int = -1,
) -> list[Path]:
    """Write the ``index``-th image (default: the last) of every tag to ``<out_dir>/<prefix>_<suffix>.png``."""
    tags = DEFAULT_TAGS if tags is None else tags
    accumulator = event_accumulator.EventAccumulator(
        str(latest_event_file(logdir)),
        size_guidance={event_accumulator.IMAGES: 0},  # 0 = keep every image
    )
    accumulator.Reload()
    available = set(accumulator.Tags()[event_accumulator.IMAGES])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for tag, suffix in tags.items():
        if tag not in available:
            print(f"skipping {tag!r}: not in the event file (logged tags: {sorted(available)})")
            continue
        images = accumulator.Images(tag)  # in step order: one per evaluated epoch
        chosen = images[index] if -len(images) <= index < len(images) else images[-1]
        path = out_dir / f"{prefix}_{suffix}.png"
        Image.open(io.BytesIO(chosen.encoded_image_string)).convert("RGB").save(path)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", help="a run folder (e.g. logs/quickstart/version_0) or an event file")
    parser.add_argument("--out", default="docs/images", help="output folder (default: docs/images)")
    parser.add_argument("--prefix", default="quickstart", help="file name prefix (default: quickstart)")
    args = parser.parse_args(argv)
    for path in export_grids(args.logdir, args.out, args.prefix):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
