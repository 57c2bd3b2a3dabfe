"""What the monitor shows for one evaluation, whatever the logger: the explanation sheet and the compact uint8
grids (probes, overlays, heatmaps) rendered on the training device and copied to the CPU once, the predictions
table, markdown texts (alerts, errors, the run's settings) and the epoch-level summary scalars.

Where each piece goes is :mod:`lightning_xai.visualize.loggers`' business; encoding and writing happen on the
background thread of :mod:`lightning_xai.visualize.writer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from lightning_xai.explain import Explanation
from lightning_xai.visualize.render import (
    Denormalize,
    make_grid,
    render_heatmap_grid,
    render_overlay_grid,
    to_display_images,
    to_uint8,
)
from lightning_xai.visualize.sheet import DEFAULT_TILE_SIZE, render_sheet


def image_grids(
    inputs: Tensor,
    results: Mapping[str, Explanation],
    normalizations: Mapping[str, str],
    *,
    colormap: str,
    denormalize: Denormalize,
    log_heatmaps: bool,
    include_probes: bool,
) -> list[tuple[str, Tensor]]:
    """``(tag, (3, H, W) uint8 CPU grid)`` pairs: ``xai/probes`` (when ``include_probes``), then per method
    ``xai/<method>/overlay`` and, with ``log_heatmaps``, ``xai/<method>/heatmap``.

    Example::

        >>> import torch
        >>> grids = image_grids(torch.rand(3, 3, 8, 8), {"m": Explanation(torch.rand(3, 2, 2), torch.rand(3, 8, 8))},
        ...     {"m": "max"}, colormap="jet", denormalize=None, log_heatmaps=True, include_probes=True)
        >>> [(tag, tuple(g.shape), g.dtype) for tag, g in grids]  # doctest: +NORMALIZE_WHITESPACE
        [('xai/probes', (3, 12, 32), torch.uint8), ('xai/m/overlay', (3, 12, 32), torch.uint8),
         ('xai/m/heatmap', (3, 12, 32), torch.uint8)]
    """
    nrow = grid_columns(len(inputs))
    grids: list[tuple[str, Tensor]] = []
    if include_probes:
        grids.append(("xai/probes", to_uint8(make_grid(to_display_images(inputs, denormalize), nrow=nrow)).cpu()))
    for name, explanation in results.items():
        normalization = normalizations.get(name, "max")
        overlay = render_overlay_grid(
            inputs,
            explanation.display,
            colormap=colormap,
            normalization=normalization,
            nrow=nrow,
            denormalize=denormalize,
        )
        grids.append((f"xai/{name}/overlay", overlay.cpu()))
        if log_heatmaps:
            heat = render_heatmap_grid(explanation.display, colormap=colormap, normalization=normalization, nrow=nrow)
            grids.append((f"xai/{name}/heatmap", heat.cpu()))
    return grids


def text_records(
    labels: Tensor | None,
    targets: Tensor,
    predicted: Tensor,
    confidence: Tensor,
    errors: Sequence[str],
    alert_messages: Sequence[str],
) -> list[tuple[str, str]]:
    """``(tag, markdown)`` pairs: ``xai/predictions`` always, ``xai/alerts`` and ``xai/errors`` when there are any.

    Example::

        >>> import torch
        >>> records = text_records(None, torch.tensor([1]), torch.tensor([1]), torch.tensor([0.9]), [], ["drift!"])
        >>> [tag for tag, _ in records], records[1][1]
        (['xai/predictions', 'xai/alerts'], '**ALERT** — drift!')
    """
    records = [("xai/predictions", prediction_table(labels, targets.cpu(), predicted.cpu(), confidence.cpu()))]
    if alert_messages:
        records.append(("xai/alerts", "\n\n".join(f"**ALERT** — {m}" for m in alert_messages)))
    if errors:
        records.append(("xai/errors", "\n\n".join(errors)))
    return records


def grid_columns(count: int) -> int:
    """Images per grid row: all of them up to 8."""
    return min(8, max(1, count))


def prediction_table(
    labels: Tensor | None,
    targets: Tensor,
    predicted: Tensor,
    confidence: Tensor,
    drift: Mapping[str, Tensor | None] | None = None,
) -> str:
    """A markdown table, one row per probe: label (– when unlabeled), explained target, prediction, confidence, and
    with ``drift`` one column per method (– where unknown).

    Example::

        >>> import torch
        >>> print(prediction_table(torch.tensor([3]), torch.tensor([3]), torch.tensor([5]), torch.tensor([0.75])))
        | probe | label | target | predicted | confidence |
        |---:|---:|---:|---:|---:|
        | 0 | 3 | 3 | 5 | 0.750 |
    """
    return prediction_rows(labels, targets, predicted, confidence, drift).markdown()


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
        images: ``(tag, (3, H, W) uint8)``: ``xai/sheet`` first, then the compact grids.
        tables: ``(tag, Table)``: ``xai/predictions``.
        texts: ``(tag, markdown)``: ``xai/alerts``, ``xai/errors`` when there are any.
        summary: ``xai/summary/...`` scalars, logged against the epoch (see :mod:`lightning_xai.visualize.dashboard`).
        settings: the run's settings, with the first evaluation a logger sees (else None).
    """

    epoch: int
    step: int
    images: list[tuple[str, Tensor]] = field(default_factory=list)
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
    log_heatmaps: bool = False,
    include_probes: bool = False,
    tile_size: int = DEFAULT_TILE_SIZE,
    drift: Mapping[str, Tensor | None] | None = None,
    drift_note: str = "",
    probe_threshold: float | None = None,
    title: str = "",
) -> EvaluationMedia:
    """Render one evaluation: the sheet (``xai/sheet``), the grids of :func:`image_grids`, the predictions table and
    the alert/error texts.

    Example::

        >>> import torch
        >>> maps = {"m": Explanation(torch.rand(2, 2, 2), torch.rand(2, 8, 8))}
        >>> media = evaluation_media(torch.rand(2, 1, 8, 8), maps, {"m": "max"}, epoch=3, step=30,
        ...     predicted=torch.tensor([0, 1]), confidence=torch.tensor([0.5, 0.9]),
        ...     targets=torch.tensor([0, 1]), labels=None, alert_messages=["drift!"])
        >>> [tag for tag, _ in media.images], [tag for tag, _ in media.tables], [tag for tag, _ in media.texts]
        (['xai/sheet', 'xai/m/overlay'], ['xai/predictions'], ['xai/alerts'])
    """
    media = EvaluationMedia(int(epoch), int(step))
    sheet = render_sheet(
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
        denormalize=denormalize,
    )
    media.images.append(("xai/sheet", sheet))
    media.images += image_grids(
        inputs,
        results,
        normalizations,
        colormap=colormap,
        denormalize=denormalize,
        log_heatmaps=log_heatmaps,
        include_probes=include_probes,
    )
    table = prediction_rows(labels, targets.cpu(), predicted.cpu(), confidence.cpu(), drift)
    media.tables.append(("xai/predictions", table))
    if alert_messages:
        media.texts.append(("xai/alerts", "\n\n".join(f"**ALERT** — {m}" for m in alert_messages)))
    if errors:
        media.texts.append(("xai/errors", "\n\n".join(errors)))
    return media
