"""What the monitor shows for one evaluation, whatever the logger: the explanation sheet (and, opt-in, the compact
32-px grids), the predictions table, markdown texts (alerts, errors, the run's settings) and the epoch-level summary
scalars.

The training thread does the torch work (tiles rendered as one batch on the training device, one copy to the CPU);
each image is then a :class:`Picture` that composes itself (numpy and Pillow) and encodes its PNG once, the first time
a logger asks, on the background thread of :mod:`lightning_xai.visualize.writer`; every logger shares the same bytes.
Where each piece goes is :mod:`lightning_xai.visualize.loggers`' business.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from lightning_xai.explain import Explanation
from lightning_xai.visualize.render import (
    Denormalize,
    apply_colormap,
    make_grid,
    normalize_maps,
    one_torch_thread,
    overlay,
    to_display_images,
    to_uint8,
)
from lightning_xai.visualize.sheet import DEFAULT_TILE_SIZE, prepare_sheet

#: zlib level of the PNGs: 1 encodes the sheet about 3x faster than Pillow's default 6, for about 15 % more bytes
PNG_COMPRESS_LEVEL = 1


def encode_png(image: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 image (Pillow; single-threaded, releases the GIL while it compresses).

    Example::

        >>> data = encode_png(np.zeros((2, 4, 3), dtype=np.uint8))
        >>> data[:8] == b"\\x89PNG\\r\\n\\x1a\\n", Image.open(io.BytesIO(data)).size
        (True, (4, 2))
    """
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "png", compress_level=compress_level)
    return buffer.getvalue()


class Picture:
    """One image of an evaluation, composed and PNG-encoded at most once, when first asked for (thread-safe).

    Ask only inside the background writer's jobs: composing (numpy, Pillow) and encoding then run off the training
    thread, and every logger gets the same array and the same PNG bytes.

    Attributes:
        height, width: its size in pixels (known before it is composed).
        compose_seconds, encode_seconds: CPU time its composition and its encoding took (0 until done).

    Example::

        >>> picture = Picture.from_tensor(torch.zeros(3, 2, 4, dtype=torch.uint8))
        >>> picture.array().shape, picture.png() is picture.png(), tuple(picture.tensor().shape)
        ((2, 4, 3), True, (3, 2, 4))
    """

    def __init__(self, compose: Callable[[], np.ndarray], height: int, width: int) -> None:
        self.height, self.width = int(height), int(width)
        self.compose_seconds = self.encode_seconds = 0.0
        self._compose: Callable[[], np.ndarray] | None = compose
        self._array: np.ndarray | None = None
        self._png: bytes | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_tensor(cls, image: Tensor) -> Picture:
        """A picture of a ``(3, H, W)`` uint8 CPU tensor."""
        return cls(lambda: np.ascontiguousarray(image.numpy().transpose(1, 2, 0)), image.shape[1], image.shape[2])

    def array(self) -> np.ndarray:
        """``(H, W, 3)`` uint8, C-contiguous (do not modify: it is shared)."""
        with self._lock:
            if self._array is None:
                assert self._compose is not None
                started = time.thread_time()
                self._array, self._compose = self._compose(), None
                self.compose_seconds = time.thread_time() - started
            return self._array

    def png(self) -> bytes:
        """The PNG bytes (level :data:`PNG_COMPRESS_LEVEL`), encoded once."""
        array = self.array()
        with self._lock:
            if self._png is None:
                started = time.thread_time()
                self._png = encode_png(array)
                self.encode_seconds = time.thread_time() - started
            return self._png

    def tensor(self) -> Tensor:
        """``(3, H, W)`` uint8, a view of :meth:`array`."""
        return torch.from_numpy(self.array()).permute(2, 0, 1)


def heat_maps(results: Mapping[str, Explanation], normalizations: Mapping[str, str], device: Any) -> dict[str, Tensor]:
    """Per method, its display maps scaled to ``[0, 1]`` (:func:`normalize_maps`), on ``device``: what the sheet and
    the grids colour."""
    return {n: normalize_maps(r.display.to(device), mode=normalizations.get(n, "max")) for n, r in results.items()}


def image_grids(
    display: Tensor,
    heats: Mapping[str, Tensor],
    *,
    colormap: str,
    overlays: bool,
    log_heatmaps: bool,
    include_probes: bool,
) -> list[tuple[str, Tensor]]:
    """The compact grids, ``(tag, (3, H, W) uint8 CPU grid)``: ``xai/probes`` (when ``include_probes``), per method
    ``xai/<method>/overlay`` (with ``overlays``) and ``xai/<method>/heatmap`` (with ``log_heatmaps``).

    Args:
        display: ``(N, 3, H, W)`` display images (:func:`to_display_images`).
        heats: method -> ``(N, H', W')`` heat in ``[0, 1]`` (:func:`heat_maps`).

    Example::

        >>> grids = image_grids(torch.rand(3, 3, 8, 8), {"m": torch.rand(3, 8, 8)}, colormap="jet", overlays=True,
        ...     log_heatmaps=True, include_probes=True)
        >>> [(tag, tuple(g.shape), g.dtype) for tag, g in grids]  # doctest: +NORMALIZE_WHITESPACE
        [('xai/probes', (3, 12, 32), torch.uint8), ('xai/m/overlay', (3, 12, 32), torch.uint8),
         ('xai/m/heatmap', (3, 12, 32), torch.uint8)]
    """
    nrow = grid_columns(len(display))
    size = tuple(display.shape[-2:])
    grids: list[tuple[str, Tensor]] = []
    if include_probes:
        grids.append(("xai/probes", to_uint8(make_grid(display, nrow=nrow)).cpu()))
    for name, heat in heats.items():
        if overlays:
            sized = (
                heat if tuple(heat.shape[-2:]) == size else F.interpolate(heat[:, None], size, mode="bilinear")[:, 0]
            )
            blended = overlay(display, apply_colormap(sized, colormap), sized)
            grids.append((f"xai/{name}/overlay", to_uint8(make_grid(blended, nrow=nrow)).cpu()))
        if log_heatmaps:
            grids.append((f"xai/{name}/heatmap", to_uint8(make_grid(apply_colormap(heat, colormap), nrow=nrow)).cpu()))
    return grids


def grid_columns(count: int) -> int:
    """Images per grid row: all of them up to 8."""
    return min(8, max(1, count))


@dataclass
class Table:
    """A small table: column names and rows of primitives (``None`` where unknown)."""

    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---:|" * len(self.columns)]
        lines += ["| " + " | ".join(_cell(v, "–") for v in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def csv(self) -> str:
        """Comma-separated, header first (no value holds a comma)."""
        return "\n".join(",".join(_cell(v, "") for v in row) for row in [self.columns, *self.rows]) + "\n"


def _cell(value: Any, missing: str) -> str:
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def prediction_rows(
    labels: Tensor | None,
    targets: Tensor,
    predicted: Tensor,
    confidence: Tensor,
    drift: Mapping[str, Tensor | None] | None = None,
) -> Table:
    """The predictions table as a :class:`Table`: probe, label, target, predicted, confidence (and drift per method).

    Example::

        >>> import torch
        >>> t = prediction_rows(None, torch.tensor([1]), torch.tensor([1]), torch.tensor([0.5]), {"gradcam": None})
        >>> t.columns, t.rows
        (['probe', 'label', 'target', 'predicted', 'confidence', 'gradcam drift'], [[0, None, 1, 1, 0.5, None]])
    """
    drift = dict(drift or {})
    table = Table(["probe", "label", "target", "predicted", "confidence"] + [f"{m} drift" for m in drift])
    values = {m: (None if v is None else [float(x) for x in v.cpu()]) for m, v in drift.items()}
    for i in range(int(predicted.shape[0])):
        row: list[Any] = [i, None if labels is None else int(labels[i]), int(targets[i]), int(predicted[i])]
        row.append(float(confidence[i]))
        row += [None if v is None or i >= len(v) else v[i] for v in values.values()]
        table.rows.append(row)
    return table


@dataclass
class EvaluationMedia:
    """Everything one evaluation shows, on the CPU, ready for any logger.

    Attributes:
        epoch, step: when (images and tables are logged at ``step``, the summary at ``epoch``).
        images: ``(tag, Picture)``: ``xai/sheet`` first, then the compact grids (opt-in).
        tables: ``(tag, Table)``: ``xai/predictions``.
        texts: ``(tag, markdown)``: ``xai/alerts``, ``xai/errors`` when there are any.
        summary: ``xai/summary/...`` scalars, logged against the epoch (see :mod:`lightning_xai.visualize.dashboard`).
        settings: the run's settings, with the first evaluation a logger sees (else None).
    """

    epoch: int
    step: int
    images: list[tuple[str, Picture]] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] | None = None


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
    probe_threshold: float | None = None,
    title: str = "",
) -> EvaluationMedia:
    """Render one evaluation: the sheet (``xai/sheet``), with ``grids`` the compact grids of :func:`image_grids`
    (``xai/probes`` when ``include_probes``, ``xai/<method>/overlay``), with ``log_heatmaps`` the bare heatmaps, the
    predictions table and the alert/error texts. The display images and each method's heat are computed once and
    shared by the sheet and the grids, rendered with one torch thread (:func:`one_torch_thread`; call this on the
    training thread); the pictures are composed and encoded later, when a logger asks.

    Example::

        >>> maps = {"m": Explanation(torch.rand(2, 2, 2), torch.rand(2, 8, 8))}
        >>> media = evaluation_media(torch.rand(2, 1, 8, 8), maps, {"m": "max"}, epoch=3, step=30,
        ...     predicted=torch.tensor([0, 1]), confidence=torch.tensor([0.5, 0.9]),
        ...     targets=torch.tensor([0, 1]), labels=None, alert_messages=["drift!"], grids=False)
        >>> [tag for tag, _ in media.images], [tag for tag, _ in media.tables], [tag for tag, _ in media.texts]
        (['xai/sheet'], ['xai/predictions'], ['xai/alerts'])
    """
    media = EvaluationMedia(int(epoch), int(step))
    with one_torch_thread(inputs.device):
        display = to_display_images(inputs, denormalize)
        heats = heat_maps(results, normalizations, display.device)
        layout, compose = prepare_sheet(
            inputs,
            results,
            normalizations,
            predicted=predicted,
            confidence=confidence,
            labels=labels,
            targets=targets,
            drift=drift,
            drift_name="vs ref" if drift_note else "drift",
            drift_threshold=probe_threshold,
            drift_note=drift_note,
            title=title,
            tile_size=tile_size,
            colormap=colormap,
            display=display,
            heats=heats,
        )
        options = {"overlays": grids, "log_heatmaps": log_heatmaps, "include_probes": include_probes and grids}
        small = image_grids(display, heats, colormap=colormap, **options)
    media.images.append(("xai/sheet", Picture(compose, layout.height, layout.width)))
    media.images += [(tag, Picture.from_tensor(grid)) for tag, grid in small]
    table = prediction_rows(labels, targets.cpu(), predicted.cpu(), confidence.cpu(), drift)
    media.tables.append(("xai/predictions", table))
    if alert_messages:
        media.texts.append(("xai/alerts", "\n\n".join(f"**ALERT** — {m}" for m in alert_messages)))
    if errors:
        media.texts.append(("xai/errors", "\n\n".join(errors)))
    return media
