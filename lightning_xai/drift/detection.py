"""What the detector reports per evaluation (:class:`Detection`) and how an alert's detection is put together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from lightning_xai.drift._state import _Candidate
from lightning_xai.drift.evidence import AlertEvidence, AlertRegion, gain_regions, input_maps
from lightning_xai.explain.behaviour import FollowTest
from lightning_xai.functional.shift import quiet_regions


@dataclass(frozen=True)
class Detection:
    """What the detector saw at one evaluation of one method.

    Attributes:
        score: the mean share of relevance that moved into the quiet regions (when ``fired``: over two evaluations).
        threshold: this evaluation's threshold (None while calibrating); when ``fired``, the confirmation's.
        noise: the larger of the per-probe standard error and the run's σ.
        fired: True when this evaluation confirms the previous evaluation's candidate (an alert); ``candidate``: True
            when the score crossed the threshold (the next evaluation confirms or drops it).
        probe_indices: probes whose own movement is over the threshold.
        region: ``regions[0]``'s box, bottom/right inclusive (None if none); ``region_share``: the share of probes
            whose largest gain lies there.
        confirmation: after a candidate, ``(movement since before the candidate, needed)``.
        regions: when ``fired``, one :class:`AlertRegion` per class (or cluster) that moved, largest first; after a
            passed transplant test (not a colour one), those the model follows alone (the surest first) and those it
            could not be asked about (:func:`followed_regions`), where it follows any;
            ``evidence``: the maps of ``probe_indices`` before and at the alert; ``num_probes``: how many there were.
        follow: the transplant test of the candidate (:mod:`~lightning_xai.explain.behaviour`), when one ran:
            passed, the alert comes at once; not followed (no more pairs gained than lost, some changed), it is
            dropped; leaning its way or no pair changed, it waits for its confirmation, where a failed test drops
            it.
    """

    score: float
    threshold: float | None
    noise: float | None
    fired: bool = False
    probe_indices: tuple[int, ...] = ()
    region: tuple[int, int, int, int] | None = None
    region_share: float = 0.0
    candidate: bool = False
    confirmation: tuple[float, float] | None = None
    regions: tuple[AlertRegion, ...] = ()
    evidence: AlertEvidence | None = field(default=None, compare=False, repr=False)
    num_probes: int = 0
    follow: FollowTest | None = None


#: ``verify(regions, ignored, origin_epoch)``: the transplant test of a candidate (``ignored``: each probe's
#: :func:`~lightning_xai.functional.shift.ignored_relevance` before the candidate, ``(P, h, w)``, None to test the
#: regions' windows only; ``origin_epoch``: the evaluation before it) against the model at the drift reference; None: it
#: cannot be tested (e.g. the weights kept are newer than ``origin_epoch``)
Verify = Callable[[tuple[AlertRegion, ...], Tensor | None, int], FollowTest | None]


def _fired(
    candidate: _Candidate,
    current: Tensor,
    raw: Tensor,
    over: tuple[int, ...],
    classes: Tensor | None,
    input_size: tuple[int, int],
    confirmation: tuple[float, float],
    finer: tuple[Tensor, Tensor] | None = None,
    window: tuple[int, int] | None = None,
) -> Detection:
    """The alert's detection: where each class of the probes that moved gained (boxes placed on the ``finer``
    method's maps, after and before, when given), and their maps before and now in the method that alerted."""
    if candidate.origin_raw is not None and candidate.origin_raw.shape == raw.shape:
        before, after = input_maps(candidate.origin_raw, input_size), input_maps(raw, input_size)
    else:  # resumed between the candidate and now: only the pooled maps were kept, show both pooled
        before, after = input_maps(candidate.origin, input_size), input_maps(current, input_size)
    classes = None if classes is None else classes.detach().cpu().long().flatten()
    boxes_on = (
        (after, before) if finer is None else (input_maps(finer[0], input_size), input_maps(finer[1], input_size))
    )
    # a map with no relevance at all (read as spread evenly) gained nowhere: the regions come from the other probes
    # that moved; when every one of them is empty, from all of them, so that the model is still asked
    empty = ~(torch.nan_to_num(raw.detach().abs(), nan=0.0, posinf=0.0).flatten(1).sum(dim=1) > 0).cpu()
    placed = tuple(i for i in over if not bool(empty[i])) or over
    regions = gain_regions(current, candidate.origin, candidate.older, placed, classes, boxes_on, input_size, window)
    evidence = AlertEvidence(over, before[list(over)], after[list(over)], candidate.origin_epoch)
    detection = Detection(*confirmation, candidate.noise, True, over, confirmation=confirmation)
    detection = replace(detection, evidence=evidence, num_probes=int(current.shape[0]))
    return with_regions(detection, regions, current, candidate, input_size)


def with_regions(
    detection: Detection,
    regions: tuple[AlertRegion, ...],
    current: Tensor,
    candidate: _Candidate,
    input_size: tuple[int, int],
) -> Detection:
    """``detection`` naming ``regions``: its ``region`` (the first one's box, bottom/right inclusive) and
    ``region_share`` (the share of probes whose largest gain into the quiet regions lies in a cell overlapping it)."""
    region, share = None, 0.0
    if regions:
        top, left, bottom, right = regions[0].box
        region = (top, left, bottom - 1, right - 1)
        gain = (current - candidate.origin).clamp_min(0) * quiet_regions(candidate.origin, True, candidate.older)
        (cells_h, cells_w), (height, width) = gain.shape[-2:], input_size
        peak = gain.flatten(1).argmax(dim=1)
        rows, cols = peak // cells_w, peak % cells_w
        inside = ((rows * height) // cells_h < bottom) & (((rows + 1) * height + cells_h - 1) // cells_h > top)
        inside &= ((cols * width) // cells_w < right) & (((cols + 1) * width + cells_w - 1) // cells_w > left)
        share = float(inside.double().mean())
    return replace(detection, regions=regions, region=region, region_share=share)


#: at most this many regions (the largest groups first) are put to the model alone at an alert
MAX_ASKED = 16


def followed_regions(regions: tuple[AlertRegion, ...], verify: Verify, origin_epoch: int) -> tuple[AlertRegion, ...]:
    """Each region (the first :data:`MAX_ASKED`) put to the model alone (its windows copied from its own donors:
    ``verify`` without the ignored places), its answer kept in its ``follow``. The regions named: those the model
    follows (:func:`follows`), the surest first (smallest p-value, then their order), then those it could not be asked
    about (untestable, a failed test, beyond :data:`MAX_ASKED`) in their order; all of them, in their order, when it
    follows none (e.g. an alert the ignored places' transplant confirmed). A region it was asked about and does not
    follow is not named: naming a place takes the model's own answer."""
    asked = []
    for region in regions[:MAX_ASKED]:
        try:
            asked.append(replace(region, follow=verify((region,), None, origin_epoch)))
        except Exception:  # noqa: BLE001 - the alert has passed its test: a region's own test cannot take it away
            asked.append(region)
    tested = tuple(asked) + regions[MAX_ASKED:]
    followed = sorted((r for r in tested if follows(r)), key=lambda r: r.follow.p_value if r.follow else 1.0)
    if not followed:
        return tested
    return (*followed, *(r for r in tested if r.follow is None))


def follows(region: AlertRegion) -> bool:
    """Whether the model follows ``region`` alone: at least two more transplants gained than lost (its own sign
    test's p-value under 1/2; a difference of one pair is a coin flip, p = 1/2)."""
    return region.follow is not None and region.follow.gained >= region.follow.lost + 2
