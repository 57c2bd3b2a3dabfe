"""Leave out the evaluations a resumed fit did again: the rule of TensorBoard's purge (``SummaryWriter(purge_step=)``:
a restart at step ``S`` hides the events at later steps written before it), confined to one monitor's events.

A fit resumed from a checkpoint into the same log directory (after a crash, a Ctrl-C, or from an earlier checkpoint)
redoes the steps after its checkpoint; the evaluations the abandoned run logged there are no longer the run's. The
monitor marks where the resumed fit starts (:mod:`lightning_xai.visualize.restart`: the checkpoint's global step,
Lightning's logging step and the epoch, with the time it was written). Of the monitor's events written before a mark:

* those logged at a step (images and texts at the global step, scalars at Lightning's step) are left out past the
  mark's step; an evaluation at the checkpoint's own step (the validation the checkpoint was saved after) stays;
* those logged against the epoch (the summary series) are left out past the mark's epoch, and in the mark's epoch (a
  checkpoint saved mid-epoch: ``val_check_interval < 1``) when written after the abandoned run's first evaluation past
  the mark's step (the monitor writes an evaluation's pictures and texts before its summary, in order).

Nothing else is touched: the user's own tags, evaluations after the mark (``validate``/``test`` after the resumed fit),
a fit started afresh (no mark: a second fit of the same ``Trainer``, a new run in the same directory), and every other
log directory (a resumed fit into a new version directory has nothing before its mark)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from lightning_xai.visualize.restart import FIT_START_TAG, read_mark

GLOBAL_STEP, STEP, EPOCH = "global_step", "step", "epoch"  # what an event's step counts


@dataclass(frozen=True)
class Restart:
    """One resumed fit: when its mark was written, where it started and when the run it abandons went past that."""

    wall_time: float
    global_step: int
    step: int
    epoch: int
    cut: float = math.inf  # when the abandoned run wrote its first picture or text past ``global_step``

    @property
    def replaces(self) -> bool:
        """Whether an earlier run logged an evaluation at a step this one does again (a resumed fit into a new
        directory, or one that an abandoned run had not gone past, replaces nothing)."""
        return self.cut < math.inf

    def redoes(self, event: Any, kind: str) -> bool:
        """Whether ``event`` (its step counting ``kind``) was logged before the restart at a step it does again."""
        if event.wall_time >= self.wall_time:
            return False
        if kind == EPOCH:
            return event.step > self.epoch or (event.step == self.epoch and event.wall_time >= self.cut)
        return bool(event.step > (self.global_step if kind == GLOBAL_STEP else self.step))


def restarts(acc: Any, local: Callable[[str], str | None]) -> list[Restart]:
    """The resumed fits marked among a run's events (``local``: a tag as the monitor's unnamed tag, None when not
    its own), in the order they were written."""
    tags = acc.Tags()
    marks = [e for t in tags.get("tensors", []) if local(t) == FIT_START_TAG for e in acc.Tensors(t)]
    written = [  # the monitor's pictures and texts, logged at the global step
        e
        for kind, read in (("images", acc.Images), ("tensors", acc.Tensors))
        for t in tags.get(kind, [])
        if local(t) not in (None, FIT_START_TAG)
        for e in read(t)
    ]
    found: list[Restart] = []
    for mark in sorted(marks, key=lambda e: e.wall_time):
        start = Restart(mark.wall_time, **read_mark(mark.tensor_proto))
        left = [e for e in written if not any(r.redoes(e, GLOBAL_STEP) for r in found)]  # after earlier restarts
        abandoned = [e.wall_time for e in left if start.redoes(e, GLOBAL_STEP)]
        found.append(replace(start, cut=min(abandoned, default=math.inf)))
    return found


class Kept:
    """An ``EventAccumulator`` read without the events that ``found`` restarts redid; ``kind(tag, plugin)`` says what
    the step of a tag's events counts, None for a tag left as it is (not the monitor's)."""

    def __init__(self, acc: Any, found: list[Restart], kind: Callable[[str, str], str | None]) -> None:
        self._acc, self._found, self._kind = acc, found, kind

    def _kept(self, events: list[Any], kind: str | None) -> list[Any]:
        if kind is None or not self._found:
            return events
        return [e for e in events if not any(r.redoes(e, kind) for r in self._found)]

    def Tags(self) -> dict[str, Any]:  # noqa: N802 - EventAccumulator's names
        return dict(self._acc.Tags())

    def Scalars(self, tag: str) -> list[Any]:  # noqa: N802
        return self._kept(self._acc.Scalars(tag), self._kind(tag, "scalars"))

    def Images(self, tag: str) -> list[Any]:  # noqa: N802
        return self._kept(self._acc.Images(tag), self._kind(tag, "images"))

    def Tensors(self, tag: str) -> list[Any]:  # noqa: N802
        return self._kept(self._acc.Tensors(tag), self._kind(tag, "tensors"))


def without_redone(
    acc: Any, subs: dict[str, Any], local: Callable[[str], str | None]
) -> tuple[Any, dict[str, Any], list[Restart]]:
    """A run's accumulator and its summary runs' without the monitor's events that a resumed fit redid, and the
    restarts found."""
    found = restarts(acc, local)
    if not found:
        return acc, subs, found

    def main(tag: str, plugin: str) -> str | None:
        key = local(tag)
        if key is None or key == FIT_START_TAG:
            return None
        if plugin == "scalars":  # the summary series are logged against the epoch, the rest at Lightning's step
            return EPOCH if key.startswith("xai/summary/") else STEP
        return GLOBAL_STEP

    def summary(tag: str, plugin: str) -> str | None:  # the summary runs: every series against the epoch
        return None if local(tag) is None else EPOCH

    return Kept(acc, found, main), {k: Kept(sub, found, summary) for k, sub in subs.items()}, found
