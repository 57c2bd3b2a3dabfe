"""What the monitor shows in TensorBoard for one evaluation: uint8 image grids (probes, overlays, heatmaps)
rendered on the training device and copied to the CPU once, and markdown texts (predictions, alerts, errors).

Encoding and writing happen elsewhere (:mod:`lightning_xai.visualize.writer`, on a background thread).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from lightning_xai.explain import Explanation
from lightning_xai.explain.run import ProbeExplanations
from lightning_xai.visualize.writer import Job, add_image_job, add_text_job

if TYPE_CHECKING:
    from lightning_xai.drift.measure import Evaluation
from lightning_xai.visualize.render import (
    Denormalize,
    make_grid,
    render_heatmap_grid,
    render_overlay_grid,
    to_display_images,
    to_uint8,
)


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


def prediction_table(labels: Tensor | None, targets: Tensor, predicted: Tensor, confidence: Tensor) -> str:
    """A markdown table, one row per probe: label (– when unlabeled), explained target, prediction, confidence.

    Example::

        >>> import torch
        >>> print(prediction_table(torch.tensor([3]), torch.tensor([3]), torch.tensor([5]), torch.tensor([0.75])))
        | probe | label | target | predicted | confidence |
        |---:|---:|---:|---:|---:|
        | 0 | 3 | 3 | 5 | 0.750 |
    """
    rows = ["| probe | label | target | predicted | confidence |", "|---:|---:|---:|---:|---:|"]
    for i in range(predicted.shape[0]):
        label = "–" if labels is None else str(int(labels[i]))
        rows.append(f"| {i} | {label} | {int(targets[i])} | {int(predicted[i])} | {float(confidence[i]):.3f} |")
    return "\n".join(rows)


def evaluation_media(
    done: ProbeExplanations,
    labels: Tensor | None,
    record: Evaluation,
    normalizations: Mapping[str, str],
    *,
    colormap: str,
    denormalize: Denormalize,
    log_heatmaps: bool,
    include_probes: bool,
) -> list[Callable[[Any, int], Job]]:
    """Everything one evaluation shows, as jobs ``job(writer, step)`` for the background writer: the image grids
    and the texts (predictions, alerts, errors)."""
    grids = image_grids(
        done.inputs,
        done.results,
        normalizations,
        colormap=colormap,
        denormalize=denormalize,
        log_heatmaps=log_heatmaps,
        include_probes=include_probes,
    )
    messages = [a.message for a in record.alerts]
    texts = text_records(labels, done.targets, done.predicted, done.confidence, record.errors, messages)
    jobs: list[Callable[[Any, int], Job]] = []
    for tag, image in grids:
        jobs.append(functools.partial(_image_job, tag, image))
    for tag, text in texts:
        jobs.append(functools.partial(_text_job, tag, text))
    return jobs


def _image_job(tag: str, image: Tensor, writer: Any, step: int) -> Job:
    return add_image_job(writer, tag, image, step)


def _text_job(tag: str, text: str, writer: Any, step: int) -> Job:
    return add_text_job(writer, tag, text, step)
