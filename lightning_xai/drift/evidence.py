"""What an alert shows: where each class (or group of probes) gained relevance, and the maps before and at it."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_xai.explain.behaviour import FollowTest
from lightning_xai.functional.shift import cells_to_pixels, peak_region, quiet_regions, smallest_box

Box = tuple[int, int, int, int]


def primitives(value: Any) -> Any:
    """Dataclasses as dicts (without fields marked ``{"saved": False}``), tuples as lists, recursively."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: primitives(getattr(value, f.name)) for f in fields(value) if f.metadata.get("saved", True)}
    if isinstance(value, (list, tuple)):
        return [primitives(v) for v in value]
    return {k: primitives(v) for k, v in value.items()} if isinstance(value, dict) else value


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The items of ``data`` that are fields of the dataclass ``cls`` (a newer version's extra fields are left out)."""
    return {k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}


#: windows that gained at least this share of the best window's gain (and touch it) join its box
NEAR_TIE = 0.9
#: the box shown is the smallest inside those windows that holds this share of their gain
BOX_SHARE = 0.9


@dataclass(frozen=True)
class AlertRegion:
    """Where one group of probes (a class, or a cluster of probes) gained relevance.

    Attributes:
        label: how the group is named in messages and pictures, e.g. ``"class 3"``.
        classes: the classes of the group's probes (empty when unlabeled); ``probe_indices``: those that moved.
        box: ``(top, left, bottom, right)`` in input pixels, bottom/right exclusive: the smallest box that holds
            :data:`BOX_SHARE` of the gain of the windows where it gained most (whole cells where there are no maps
            at input resolution).
        place: the box's place in words (``"top-left"``, ``"most of the image"``, ...; empty from an older version).
        windows: those whole windows (each one cell of the detector's grid), what the transplant test copies; None
            when they are the box itself (or from an older version).
        follow: after a passed transplant test, this region's own (its windows copied from its donors alone): how
            often the model follows it now and at the reference; None when it was not asked, could not be tested
            or its test failed.
    """

    label: str
    classes: tuple[int, ...]
    probe_indices: tuple[int, ...]
    box: Box
    place: str = ""
    windows: Box | None = None
    follow: FollowTest | None = None

    def to_dict(self) -> dict[str, Any]:
        return primitives(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertRegion:
        keys = ("classes", "probe_indices", "box")
        classes, probes, (top, left, bottom, right) = (tuple(int(v) for v in data[key]) for key in keys)
        windows, follow = data.get("windows"), data.get("follow")
        found = None if windows is None else (int(windows[0]), int(windows[1]), int(windows[2]), int(windows[3]))
        test = FollowTest(**known_fields(FollowTest, follow)) if isinstance(follow, dict) else None
        box, place = (top, left, bottom, right), str(data.get("place", ""))
        return cls(str(data["label"]), classes, probes, box, place, found, test)


@dataclass(frozen=True)
class AlertEvidence:
    """The maps of the probes that moved, before and at an alert: ``(k, H, W)`` float CPU tensors at input resolution
    that sum to 1 per probe (0 everywhere for a map with no relevance; :func:`input_maps`), so ``after - before`` is
    the relevance that moved.

    Attributes:
        probe_indices: the probes shown (grid positions), in the order of the rows of ``before``/``after``.
        before: their maps at ``before_epoch`` (the evaluation the detector compared with).
        after: their maps at the alert; ``before_epoch``: the epoch of ``before`` (-1 when unknown).
    """

    probe_indices: tuple[int, ...]
    before: Tensor = field(repr=False)
    after: Tensor = field(repr=False)
    before_epoch: int


def input_maps(raw: Tensor, input_size: tuple[int, int]) -> Tensor:
    """``|raw|`` ``(P, h, w)`` resized (bilinear) to ``input_size``, summing to 1 per probe (0 everywhere for a map
    with no relevance: it gained nowhere, and is drawn empty); float32 on the CPU."""
    m = torch.nan_to_num(raw.detach().float().cpu().abs(), nan=0.0, posinf=0.0)
    if tuple(m.shape[-2:]) != tuple(input_size):
        m = F.interpolate(m.unsqueeze(1), size=input_size, mode="bilinear", align_corners=False).squeeze(1)
    total = m.sum(dim=(1, 2), keepdim=True)
    return torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), 0.0)


def cell_span(first: int, last: int, cells: int, size: int) -> tuple[int, int]:
    """Input pixels ``[start, end)`` of cells ``first..last`` of ``cells`` (as adaptive average pooling splits)."""
    return (first * size) // cells, math.ceil((last + 1) * size / cells)


def place_name(box: Box, input_size: tuple[int, int]) -> str:
    """The box's place in words (``"top-left"``, ``"most of the image"``, ...) by the third its centre lies in."""
    (height, width), (top, left, bottom, right) = input_size, box
    if (bottom - top) * (right - left) > 0.5 * height * width:
        return "most of the image"
    row = ("top", "", "bottom")[min(2, int(3 * (top + bottom) / 2 / max(1, height)))]
    col = ("left", "", "right")[min(2, int(3 * (left + right) / 2 / max(1, width)))]
    return "-".join(p for p in (row, col) if p) or "centre"


def _groups(moved: list[int], classes: Tensor | None, gain: Tensor) -> list[tuple[str, tuple[int, ...], list[int]]]:
    """``(label, classes, probes)`` per class of the moved probes, else per cluster of touching ``gain`` peaks."""
    peak = gain.flatten(1).argmax(1)
    peaks = torch.stack([peak // gain.shape[-1], peak % gain.shape[-1]], 1)
    if classes is not None and classes.numel() == peaks.shape[0]:
        label = [int(c) for c in classes.tolist()]
        by_class = itertools.groupby(sorted(moved, key=label.__getitem__), key=label.__getitem__)
        return [(f"class {c}", (c,), list(probes)) for c, probes in by_class]
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
    window: tuple[int, int] | None = None,
) -> tuple[AlertRegion, ...]:
    """One :class:`AlertRegion` per class (or cluster) of the ``moved`` probes, largest first, boxing where it gained
    most in the quiet regions: the windows of ``fine`` (``(after, before)``) near the best, and inside them the
    smallest box that holds :data:`BOX_SHARE` of their gain; else cells. A window is one cell of ``current``'s grid
    unless ``window`` (input pixels) is given."""
    quiet = quiet_regions(origin, common=True, older=older)[0]
    gain = (current - origin).clamp_min(0) * quiet
    cells_h, cells_w = gain.shape[-2:]
    found: list[tuple[int, float, AlertRegion]] = []
    for label, group_classes, probes in _groups(list(moved), classes, gain):
        group_gain = gain[probes].mean(dim=0)
        boxes = _fine_box(fine, probes, quiet, input_size, window) if fine is not None else None
        if boxes is None:
            cells = peak_region(group_gain, 0.5)
            if cells is None:
                continue
            top, bottom = cell_span(cells[0], cells[2], cells_h, input_size[0])
            left, right = cell_span(cells[1], cells[3], cells_w, input_size[1])
            boxes = (top, left, bottom, right), None
        box, windows = boxes
        region = AlertRegion(label, group_classes, tuple(probes), box, place_name(box, input_size), windows)
        found.append((len(probes), float(group_gain.sum()), region))
    return tuple(region for _, _, region in sorted(found, key=lambda item: (-item[0], -item[1])))


def _fine_box(
    fine: tuple[Tensor, Tensor],
    probes: list[int],
    quiet: Tensor,
    input_size: tuple[int, int],
    window: tuple[int, int] | None = None,
) -> tuple[Box, Box | None] | None:
    """``(box, windows)`` in input pixels: the box of the windows (a cell, or ``window``) inside the quiet regions
    that gained most for ``probes``, and inside it the smallest box holding :data:`BOX_SHARE` of their gain
    (``windows`` None when that is the whole of it)."""
    (after, before), (height, width), (cells_h, cells_w) = fine, input_size, quiet.shape
    gained = (after[probes] - before[probes]).clamp_min(0).mean(dim=0)
    gain = gained * cells_to_pixels(quiet, (height, width))  # where: in the quiet regions only
    window = window or (max(1, round(height / cells_h)), max(1, round(width / cells_w)))
    blob = peak_region(F.avg_pool2d(gain[None, None].double(), window, stride=1)[0, 0], NEAR_TIE)
    if blob is None:
        return None
    windows = (blob[0], blob[1], blob[2] + window[0], blob[3] + window[1])
    # the box inside the windows on all that gained there: a cue across a cell edge into a cell that is not quiet
    # keeps its part there (the quiet mask alone would cut it to the sliver on the quiet side)
    inner = smallest_box(gained[windows[0] : windows[2], windows[1] : windows[3]], BOX_SHARE)
    if inner is None:
        return windows, None
    box = (windows[0] + inner[0], windows[1] + inner[1], windows[0] + inner[2], windows[1] + inner[3])
    return (box, None) if box == windows else (box, windows)
