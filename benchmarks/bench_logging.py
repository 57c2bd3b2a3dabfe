"""Cost of one evaluation's pictures, step by step, without a Trainer: what each choice of the media path costs.

For P probes (default 16) of 3x64x64 with Grad-CAM-like and IG-like maps (two methods), medians over ``--repeats``
of the CPU time of the calling thread (``time.thread_time``: robust to other processes on a shared machine) and of
the wall time, for:

- ``render sheet`` / ``render sheet+grids``: :func:`~lightning_xai.visualize.media.evaluation_media` (the training
  thread's part: display images, heat, the tiles as one batch, one copy to the CPU), without / with the compact
  32-px grids (``grids=True``: ``xai/<method>/overlay``);
- ``compose``: the sheet's page (numpy + Pillow text; the writer thread's part);
- ``png L6`` / ``png L1`` / ``jpeg q90``: encoding the sheet with Pillow as PNG at zlib level 6 (what
  ``SummaryWriter.add_image`` uses), at level 1 (the monitor before 2026-12-06) and as JPEG at quality 90, 4:4:4
  (:func:`~lightning_xai.visualize.media.encode_jpeg`, the monitor now);
- ``tb add_image x3``: the old TensorBoard path, ``add_image`` of the sheet and the two grids (each re-encoded);
- ``tb encoded``: the new one, the sheet's JPEG bytes written as an image summary (no encoding);
- ``checksum, TensorBoard's`` / ``checksum, numpy``: the masked CRC-32C of the sheet's event record, computed by
  TensorBoard's event writer thread without TensorFlow (pure Python) and by
  :func:`~lightning_xai.visualize.crc.masked_crc32c` (what the monitor makes that thread use; same values);
- per evaluation: ``old`` = add_image x3 + a second encoding for a CSV logger; ``new`` = compose + one JPEG
  + the pre-encoded write, shared by every logger.

    python benchmarks/bench_logging.py [--probes 16] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _common import apply_threads, base_parser, fmt_table, make_images, pick_device, print_header
from PIL import Image

from lightning_xai.explain import Explanation
from lightning_xai.visualize.media import Picture, encode_jpeg, evaluation_media
from lightning_xai.visualize.sheet import prepare_sheet

TB_CHECKSUM = "checksum, TensorBoard's"


def encode_png(image: Image.Image, compress_level: int) -> bytes:
    """The former path, for the comparison: PNG bytes at a zlib level (of the RGB image; the sheet is RGBX)."""
    buffer = io.BytesIO()
    (image if image.mode == "RGB" else image.convert("RGB")).save(buffer, "png", compress_level=compress_level)
    return buffer.getvalue()


def measure(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Median CPU time of this thread and median wall time (ms) of ``fn``, and its last result."""
    cpu, wall, result = [], [], None
    fn()  # warm-up
    for _ in range(repeats):
        c, w = time.thread_time(), time.perf_counter()
        result = fn()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    return 1e3 * statistics.median(cpu), 1e3 * statistics.median(wall), result


def evaluation(probes: int) -> tuple[torch.Tensor, dict[str, Explanation], dict[str, Any]]:
    images, labels = make_images(probes, (3, 64, 64), seed=1)
    g = torch.Generator().manual_seed(0)
    cam = F.interpolate(torch.rand(probes, 1, 4, 4, generator=g), size=(64, 64), mode="bilinear")[:, 0]
    ig = torch.randn(probes, 3, 64, 64, generator=g)
    results = {
        "gradcam": Explanation(cam[:, ::16, ::16], cam),
        "integrated_gradients": Explanation(ig.abs().sum(1), ig.abs().sum(1)),
    }
    kw = {
        "predicted": labels,
        "confidence": torch.rand(probes, generator=g),
        "targets": labels,
        "labels": labels,
        "drift": {"gradcam": torch.rand(probes, generator=g), "integrated_gradients": None},
        "drift_note": "vs ref: rank drift against epoch 2",
        "probe_threshold": 0.4,
        "title": "epoch 5   step 120",
        "denormalize": ([0.5] * 3, [0.25] * 3),
    }
    return images, results, kw


def main() -> None:
    parser = base_parser((__doc__ or "").splitlines()[0])
    parser.set_defaults(repeats=7)
    parser.add_argument("--probes", type=int, default=16)
    args = parser.parse_args()
    apply_threads(args.threads)
    device = pick_device(args.device or "cpu")
    print_header(f"pictures of one evaluation, {args.probes} probes of 3x64x64, 2 methods", device)
    from torch.utils.tensorboard import SummaryWriter

    images, results, kw = evaluation(args.probes)
    images = images.to(device)
    results = {k: Explanation(v.raw.to(device), v.display.to(device)) for k, v in results.items()}
    norms = {"gradcam": "max", "integrated_gradients": "percentile"}
    rows: list[dict[str, Any]] = []

    def media(grids: bool) -> Any:
        return evaluation_media(images, results, norms, epoch=5, step=120, grids=grids, **kw)

    def row(step: str, thread: str, fn: Callable[[], Any]) -> Any:
        cpu, wall, result = measure(fn, args.repeats)
        rows.append({"step": step, "thread": thread, "cpu_ms": cpu, "wall_ms": wall})
        return result

    row("render sheet", "training", lambda: media(False))
    with_grids = row("render sheet+grids", "training", lambda: media(True))
    pictures: dict[str, Picture] = dict(with_grids.images)
    sheet_kw = {k: v for k, v in kw.items() if k not in ("drift_note", "probe_threshold")}
    _, compose = prepare_sheet(images, results, norms, drift_note=kw["drift_note"], **sheet_kw)
    page = row("compose", "writer", compose)
    png6 = row("png L6", "writer", lambda: encode_png(page, compress_level=6))
    png1 = row("png L1", "writer", lambda: encode_png(page, compress_level=1))
    jpeg = row("jpeg q90", "writer", lambda: encode_jpeg(page))
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tensorboards_checksum

    from lightning_xai.visualize.crc import masked_crc32c

    row(TB_CHECKSUM, "TensorBoard's", lambda: tensorboards_checksum(jpeg))
    row("checksum, numpy", "TensorBoard's", lambda: masked_crc32c(jpeg))
    tensors = {tag: p.tensor() for tag, p in pictures.items()}
    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(tmp)

        def add_image_x3() -> None:
            for tag, image in tensors.items():
                writer.add_image(tag, image, global_step=1, dataformats="CHW")

        def encoded() -> None:
            from tensorboard.compat.proto.summary_pb2 import Summary

            image = Summary.Image(height=page.height, width=page.width, colorspace=3, encoded_image_string=jpeg)
            writer.file_writer.add_summary(Summary(value=[Summary.Value(tag="xai/sheet", image=image)]), 1)

        row("tb add_image x3", "writer", add_image_x3)
        row("tb encoded", "writer", encoded)
        writer.close()
    print(fmt_table(rows))
    cpu = {r["step"]: r["cpu_ms"] for r in rows}
    old_writer = cpu["tb add_image x3"] + cpu["png L6"]  # TensorBoard, then a CSV logger encoding again
    new_writer = cpu["compose"] + cpu["jpeg q90"] + cpu["tb encoded"]
    print(
        f"SUMMARY pictures per evaluation ({args.probes} probes, 2 methods, sheet {page.width}x{page.height} px, "
        f"{torch.get_num_threads()} torch threads, CPU ms of the thread): training thread {cpu['render sheet']:.1f} "
        f"(sheet only) vs {cpu['render sheet+grids']:.1f} (with the 32-px grids); writer thread new "
        f"{new_writer:.1f} (compose {cpu['compose']:.1f} + JPEG q90 {cpu['jpeg q90']:.1f} + write "
        f"{cpu['tb encoded']:.1f}, shared by every logger) vs old {old_writer:.1f} (add_image x3 "
        f"{cpu['tb add_image x3']:.1f} + a second encoding per further logger {cpu['png L6']:.1f}); JPEG "
        f"{len(jpeg) / 1e3:.0f} kB vs PNG L1 {len(png1) / 1e3:.0f} kB (PNG L1 {cpu['png L1']:.1f} ms) and L6 "
        f"{len(png6) / 1e3:.0f} kB; the record's checksum on TensorBoard's thread {cpu[TB_CHECKSUM]:.1f} "
        f"(pure Python) vs {cpu['checksum, numpy']:.1f} (numpy)"
    )


if __name__ == "__main__":
    main()
