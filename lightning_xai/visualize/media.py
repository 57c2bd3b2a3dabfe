"""What the monitor shows for one evaluation, whatever the logger: the sheet (and, opt-in, compact grids), the
predictions table and markdown texts. The torch work runs on the training thread; each :class:`Picture` is composed
and JPEG-encoded once, when a logger first asks, on the background writer's thread (:mod:`.writer`)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from lightning_xai.explain import Explanation
from lightning_xai.explain.threads import one_torch_thread
from lightning_xai.functional.shift import blank_maps
from lightning_xai.visualize.display import Denormalize, to_display_images
from lightning_xai.visualize.render import (
    apply_colormap,
    make_grid,
    normalize_maps,
    overlay,
    to_uint8,
)
from lightning_xai.visualize.sheet import DEFAULT_TILE_SIZE, prepare_sheet

#: JPEG quality of every logged picture
JPEG_QUALITY = 90
#: Pillow's ``subsampling`` values: chroma at full resolution (4:4:4), or halved both ways (4:2:0)
FULL_CHROMA, HALF_CHROMA = 0, 2


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY, subsampling: int = FULL_CHROMA) -> bytes:
    """JPEG bytes of an RGB or RGBX image (Pillow; releases the GIL; 8x faster than a PNG at zlib level 1), chroma at
    full resolution unless ``subsampling`` says :data:`HALF_CHROMA` (a third faster, a fifth smaller)."""
    buffer = io.BytesIO()
    image.save(buffer, "jpeg", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


class Picture:
    """An image composed and JPEG-encoded once, when first asked for (thread-safe), for every logger alike."""

    #: the file extension of :meth:`encoded`
    extension = "jpg"

    def __init__(
        self, compose: Callable[[], Image.Image], height: int, width: int, subsampling: int = FULL_CHROMA
    ) -> None:
        self.height, self.width, self.subsampling = int(height), int(width), int(subsampling)
        self.compose_seconds = self.encode_seconds = 0.0
        self._compose: Callable[[], Image.Image] | None = compose
        self._image: Image.Image | None = None
        self._encoded: bytes | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_tensor(cls, image: Tensor) -> Picture:
        """A picture of a ``(3, H, W)`` uint8 CPU tensor."""
        return cls(lambda: Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())), *image.shape[1:])

    def image(self) -> Image.Image:
        """The composed image, RGB or RGBX (do not modify: it is shared)."""
        with self._lock:
            if self._image is None:
                assert self._compose is not None
                started = time.thread_time()
                self._image, self._compose = self._compose(), None
                self.compose_seconds = time.thread_time() - started
            return self._image

    def array(self) -> np.ndarray:
        """``(H, W, 3)`` uint8, C-contiguous, a new copy of :meth:`image` per call."""
        image = self.image()
        return np.array(image if image.mode == "RGB" else image.convert("RGB"))

    def encoded(self) -> bytes:
        """The JPEG bytes (quality :data:`JPEG_QUALITY`, chroma as ``subsampling`` says), encoded once."""
        image = self.image()
        with self._lock:
            if self._encoded is None:
                started = time.thread_time()
                self._encoded = encode_jpeg(image, subsampling=self.subsampling)
                self.encode_seconds = time.thread_time() - started
            return self._encoded

    def tensor(self) -> Tensor:
        """``(3, H, W)`` uint8, a view of a new :meth:`array`."""
        return torch.from_numpy(self.array()).permute(2, 0, 1)


@dataclass
class Table:
    """Column names and rows of primitives (``None`` where unknown)."""

    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---:|" * len(self.columns)]
        return "\n".join(lines + ["| " + " | ".join(_cell(v, "–") for v in row) + " |" for row in self.rows])

    def csv(self) -> str:
        """Comma-separated, header first (no value holds a comma)."""
        return "\n".join(",".join(_cell(v, "") for v in row) for row in [self.columns, *self.rows]) + "\n"


def _cell(value: Any, missing: str) -> str:
    return missing if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def drift_column(method: str) -> str:
    """The predictions table's column of ``method``'s drift: what the sheet writes under a tile as ``vs ref``."""
    return f"{method} rank drift vs ref"


def prediction_rows(
    labels: Tensor | None,
    targets: Tensor,
    predicted: Tensor,
    confidence: Tensor,
    drift: Mapping[str, Tensor | None] | None = None,
    blank: Mapping[str, Sequence[bool]] | None = None,
) -> Table:
    """The predictions table: probe, label, target, predicted, confidence (and drift per method; none for a map with
    no relevance, ``blank``, whose drift would read 1.00 against any map with relevance: the sheet's 'no relevance')."""
    drift, blank = dict(drift or {}), dict(blank or {})
    table = Table(["probe", "label", "target", "predicted", "confidence"] + [drift_column(m) for m in drift])
    values = [None if v is None else [float(x) for x in v.cpu().tolist()] for v in drift.values()]
    known = None if labels is None else [int(x) for x in labels.cpu().tolist()]
    columns = [[f(x) for x in t.cpu().tolist()] for f, t in ((int, targets), (int, predicted), (float, confidence))]
    for i in range(int(predicted.shape[0])):
        row = [i, None if known is None else known[i], columns[0][i], columns[1][i], columns[2][i]]
        empty = [i < len(blank.get(m, ())) and blank[m][i] for m in drift]
        shown = zip(values, empty, strict=True)
        table.rows.append(row + [None if v is None or i >= len(v) or e else v[i] for v, e in shown])
    return table


@dataclass
class EvaluationMedia:
    """One evaluation on the CPU for any logger: ``(tag, item)`` images, tables and texts, the settings (first time a
    logger sees the run), and for the dashboard the methods, name, summary series per run, drift rules and whether
    the evaluation has localisation scalars (``Display.probe_masks``)."""

    epoch: int
    step: int
    images: list[tuple[str, Picture]] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)
    settings: dict[str, Any] | None = None
    methods: list[str] = field(default_factory=list)
    name: str | None = None
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    rules: Sequence[Any] = ()
    localised: bool = False


def evaluation_media(
    inputs: Tensor,
    results: Mapping[str, Explanation],
    normalizations: Mapping[str, str],
    *,
    epoch: int,
    step: int,
    predicted: Tensor,
    confidence: Tensor,
    targets: Tensor,
    labels: Tensor | None,
    errors: Sequence[str] = (),
    alert_messages: Sequence[str] = (),
    colormap: str = "jet",
    denormalize: Denormalize = None,
    grids: bool = False,
    log_heatmaps: bool = False,
    include_probes: bool = False,
    tile_size: int = DEFAULT_TILE_SIZE,
    drift: Mapping[str, Tensor | None] | None = None,
    drift_note: str = "",
    moved: Mapping[str, Collection[int]] | None = None,
    title: str = "",
    alert: str = "",
) -> EvaluationMedia:
    """Render one evaluation with one torch thread: ``xai/sheet``, with ``grids`` ``xai/<method>/overlay`` (and with
    ``include_probes`` ``xai/probes``), with ``log_heatmaps`` ``xai/<method>/heatmap``, the table and the texts."""
    media = EvaluationMedia(int(epoch), int(step))
    with one_torch_thread(inputs.device):
        display = to_display_images(inputs, denormalize)
        heats = {
            n: normalize_maps(r.display.to(display.device), normalizations.get(n, "max")) for n, r in results.items()
        }
        captions: dict[str, Any] = dict(predicted=predicted, confidence=confidence, labels=labels, targets=targets)
        looks: dict[str, Any] = dict(title=title, alert=alert, tile_size=tile_size, colormap=colormap)
        blank = {n: blank_maps(r.raw).tolist() for n, r in results.items()}  # no relevance: no drift on sheet, table
        looks.update(display=display, heats=heats, blank=blank, skipped=[n for n in normalizations if n not in results])
        layout, compose = prepare_sheet(
            inputs,
            results,
            normalizations,
            drift=drift,
            drift_name="vs ref" if drift_note else "drift",
            moved=moved,
            drift_note=drift_note,
            **captions,
            **looks,
        )
        size = tuple(display.shape[-2:])
        pictures = [("xai/probes", display)] if include_probes and grids else []
        for name, heat in heats.items():
            if grids:
                sized = heat if heat.shape[-2:] == size else F.interpolate(heat[:, None], size, mode="bilinear")[:, 0]
                pictures.append((f"xai/{name}/overlay", overlay(display, apply_colormap(sized, colormap), sized)))
            if log_heatmaps:
                pictures.append((f"xai/{name}/heatmap", apply_colormap(heat, colormap)))
        nrow = min(8, max(1, len(display)))
        grid_tensors = [(tag, to_uint8(make_grid(images, nrow=nrow)).cpu()) for tag, images in pictures]
    # chroma halved only where every tile cell is an even block at even pixels (the sheet's text stays sharp: ink
    # is luma; a coloured caption's hue spreads by a pixel); else full, so one-pixel cells keep their colour
    chroma = HALF_CHROMA if layout.even_cells else FULL_CHROMA
    media.images.append(("xai/sheet", Picture(compose, layout.height, layout.width, chroma)))
    media.images += [(tag, Picture.from_tensor(grid)) for tag, grid in grid_tensors]
    table = prediction_rows(labels, targets.cpu(), predicted.cpu(), confidence.cpu(), drift, blank)
    media.tables.append(("xai/predictions", table))
    if alert_messages:
        media.texts.append(("xai/alerts", "\n\n".join(f"**ALERT** — {m}" for m in alert_messages)))
    if errors:
        media.texts.append(("xai/errors", "\n\n".join(errors)))
    return media
