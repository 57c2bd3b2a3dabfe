"""What an alert shows: where each class (or group of probes) gained relevance (one box per class, so a cue whose
place spells the label gets one box per place), and the maps before and at the alert. Drawing is visualize's job."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_xai.functional.shift import peak_region, quiet_regions

Box = tuple[int, int, int, int]


def primitives(value: Any) -> Any:
    """Dataclasses as dicts (without the fields whose metadata says ``{"saved": False}``) and tuples as lists,
    recursively: what a checkpoint that loads with ``torch.load(weights_only=True)`` may hold."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return {f.name: primitives(getattr(value, f.name)) for f in fields if f.metadata.get("saved", True)}
    if isinstance(value, (list, tuple)):
        return [primitives(v) for v in value]
    return {k: primitives(v) for k, v in value.items()} if isinstance(value, dict) else value


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The items of ``data`` that are fields of the dataclass ``cls`` (a newer version's extra fields are left out)."""
    return {k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}}


#: windows that gained at least this share of the best window's gain (and touch it) join its box
NEAR_TIE = 0.9


@dataclass(frozen=True)
class AlertRegion:
    """Where one group of probes (a class, or a cluster of probes) gained relevance.

    Attributes:
        label: how the group is named in messages and pictures, e.g. ``"class 3"``.
        classes: the classes of the group's probes (empty when the probes are unlabeled).
        probe_indices: the probes (grid positions) of the group that moved.
        box: ``(top, left, bottom, right)`` in input pixels, bottom/right exclusive.
        place: the box's place in words (``"top-left"``, ``"most of the image"``, ...; empty from an older version).
    """

    label: str
    classes: tuple[int, ...]
    probe_indices: tuple[int, ...]
    box: Box
    place: str = ""

    def to_dict(self) -> dict[str, Any]:
        return primitives(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertRegion:
        keys = ("classes", "probe_indices", "box")
        classes, probes, (top, left, bottom, right) = (tuple(int(v) for v in data[key]) for key in keys)
        return cls(str(data["label"]), classes, probes, (top, left, bottom, right), str(data.get("place", "")))


@dataclass(frozen=True)
class AlertEvidence:
    """The maps of the probes that moved, before and at an alert: ``(k, H, W)`` float CPU tensors at input resolution
    that sum to 1 per probe (:func:`input_maps`), so ``after - before`` is the relevance that moved.

    Attributes:
        probe_indices: the probes shown (grid positions), in the order of the rows of ``before``/``after``.
        before: their maps at ``before_epoch`` (the evaluation the detector compared with).
        after: their maps at the alert.
        before_epoch: the epoch of ``before`` (-1 when unknown).
    """

    probe_indices: tuple[int, ...]
    before: Tensor = field(repr=False)
    after: Tensor = field(repr=False)
    before_epoch: int


def input_maps(raw: Tensor, input_size: tuple[int, int]) -> Tensor:
    """``|raw|`` ``(P, h, w)`` at ``input_size`` (bilinear when the sizes differ), normalised to sum 1 per probe (an
    all-zero map becomes uniform); float32 on the CPU.

    Example::

        >>> input_maps(torch.tensor([[[0.0, -2.0], [0.0, 2.0]]]), (2, 2))
        tensor([[[0.0000, 0.5000],
                 [0.0000, 0.5000]]])
    """
    m = torch.nan_to_num(raw.detach().float().cpu().abs(), nan=0.0, posinf=0.0)
    if tuple(m.shape[-2:]) != tuple(input_size):
        m = F.interpolate(m.unsqueeze(1), size=input_size, mode="bilinear", align_corners=False).squeeze(1)
    total = m.sum(dim=(1, 2), keepdim=True)
    uniform = torch.full_like(m, 1.0 / max(1, m.shape[1] * m.shape[2]))
    return torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), uniform)


def cell_span(first: int, last: int, cells: int, size: int) -> tuple[int, int]:
    """Input pixels ``[start, end)`` covered by cells ``first..last`` of ``cells`` (as adaptive average pooling splits
    ``size`` pixels).

    Example::

        >>> cell_span(0, 0, 8, 32), cell_span(7, 7, 8, 32), cell_span(1, 2, 3, 10)
        ((0, 4), (28, 32), (3, 10))
    """
    return (first * size) // cells, math.ceil((last + 1) * size / cells)


def place_name(box: Box, input_size: tuple[int, int]) -> str:
    """The box's place in words, by the third of the image its centre lies in.

    Example::

        >>> size = (32, 32)
        >>> place_name((1, 1, 5, 5), size), place_name((12, 26, 20, 32), size), place_name((0, 0, 30, 32), size)
        ('top-left', 'right', 'most of the image')
    """
    height, width = input_size
    top, left, bottom, right = box
    if (bottom - top) * (right - left) > 0.5 * height * width:
        return "most of the image"
    row = ("top", "", "bottom")[min(2, int(3 * (top + bottom) / 2 / max(1, height)))]
    col = ("left", "", "right")[min(2, int(3 * (left + right) / 2 / max(1, width)))]
    return "-".join(p for p in (row, col) if p) or "centre"


def _groups(moved: list[int], classes: Tensor | None, gain: Tensor) -> list[tuple[str, tuple[int, ...], list[int]]]:
    """``(label, classes, probes)`` per class of the moved probes; without classes, per cluster of probes whose
    largest ``gain`` ``(P, h, w)`` lies in the same or touching cells."""
    peak = gain.flatten(1).argmax(1)
    peaks = torch.stack([peak // gain.shape[-1], peak % gain.shape[-1]], 1)
    if classes is not None and classes.numel() == peaks.shape[0]:
        by_class: dict[int, list[int]] = {}
        for i in moved:
            by_class.setdefault(int(classes[i]), []).append(i)
        return [(f"class {c}", (c,), probes) for c, probes in sorted(by_class.items())]
    clusters: list[list[int]] = []
    for i in moved:
        near = [c for c in clusters if any(int((peaks[i] - peaks[j]).abs().max()) <= 1 for j in c)]
        clusters = [c for c in clusters if c not in near] + [sorted([i] + [j for c in near for j in c])]
    return [("probes " + ",".join(str(i) for i in c), (), c) for c in sorted(clusters)]


def gain_regions(
    current: Tensor,
    origin: Tensor,
    older: Tensor | None,
    moved: tuple[int, ...],
    classes: Tensor | None,
    fine: tuple[Tensor, Tensor] | None,
    input_size: tuple[int, int],
) -> tuple[AlertRegion, ...]:
    """One :class:`AlertRegion` per class (``classes``, ``(P,)`` or None: per cluster of where they gained) of the
    ``moved`` probes, largest group first, boxing where the group gained most in the quiet regions of ``origin`` (and
    ``older``) on the way to ``current`` (relevance distributions ``(P, h, w)``). With ``fine`` (``(after, before)``
    at input resolution, :func:`input_maps`) the box covers the cell-sized windows that gained within
    :data:`NEAR_TIE` of the best and touch it; without, the blob of cells around the peak that gained half as much."""
    quiet = quiet_regions(origin, common=True, older=older)[0]
    gain = (current - origin).clamp_min(0) * quiet
    cells_h, cells_w = gain.shape[-2:]
    found: list[tuple[int, float, AlertRegion]] = []
    for label, group_classes, probes in _groups(list(moved), classes, gain):
        group_gain = gain[probes].mean(dim=0)
        box = _fine_box(fine, probes, quiet, input_size) if fine is not None else None
        if box is None:
            cells = peak_region(group_gain, 0.5)
            if cells is None:
                continue
            top, bottom = cell_span(cells[0], cells[2], cells_h, input_size[0])
            left, right = cell_span(cells[1], cells[3], cells_w, input_size[1])
            box = (top, left, bottom, right)
        region = AlertRegion(label, group_classes, tuple(probes), box, place_name(box, input_size))
        found.append((len(probes), float(group_gain.sum()), region))
    found.sort(key=lambda item: (-item[0], -item[1]))
    return tuple(region for _, _, region in found)


def _fine_box(fine: tuple[Tensor, Tensor], probes: list[int], quiet: Tensor, input_size: tuple[int, int]) -> Box | None:
    """The box, in input pixels, of the cell-sized windows inside the quiet regions that gained most for ``probes``."""
    after, before = fine
    height, width = input_size
    cells_h, cells_w = quiet.shape
    area = quiet[torch.arange(height) * cells_h // height][:, torch.arange(width) * cells_w // width]
    gain = (after[probes] - before[probes]).clamp_min(0).mean(dim=0) * area
    window = (max(1, round(height / cells_h)), max(1, round(width / cells_w)))
    blob = peak_region(F.avg_pool2d(gain[None, None].double(), window, stride=1)[0, 0], NEAR_TIE)
    return None if blob is None else (blob[0], blob[1], blob[2] + window[0], blob[3] + window[1])
