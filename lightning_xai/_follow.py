"""The monitor's side of the transplant test: the model's weights at the drift reference, and each evaluation's test."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import Tensor, nn

from lightning_xai.drift.detector import Verify
from lightning_xai.drift.evidence import AlertRegion
from lightning_xai.explain.behaviour import FollowTest, follow_test, snapshot
from lightning_xai.explain.forward import ModelForwardFn
from lightning_xai.explain.threads import torch_threads


class FollowCheck:
    """Keeps the model's weights of the drift reference's evaluation (float32, on the CPU: one copy of the model; rank
    0, in memory only: a resumed run keeps those of its first evaluation instead) and builds each evaluation's
    ``verify`` for the detector (:mod:`~lightning_xai.explain.behaviour`).

    Args:
        alpha: the sign test's level (the detector's ``alpha``).
    """

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self._reference: tuple[int, dict[str, Tensor]] | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_reference": None}  # not pickled (ddp_spawn, copies)

    @property
    def ready(self) -> bool:
        """Whether the reference's weights are kept (candidates can be put to the model)."""
        return self._reference is not None

    def keep(self, module: nn.Module, epoch: int, reference_epochs: Iterable[int]) -> None:
        """After an evaluation: keep ``module``'s weights at the drift reference's evaluation (the earliest method's),
        or, when none from then on are kept (a resumed run, a reference set again), at the first evaluation since.
        When they cannot be copied (e.g. out of memory), none are kept: candidates get the detector's own tests."""
        references = set(reference_epochs)
        if not references or epoch < min(references):
            return
        if self._reference is not None and self._reference[0] >= min(references):
            return
        try:
            self._reference = (epoch, snapshot(module))
        except Exception:  # noqa: BLE001 - never kills the run
            self._reference = None

    def verifier(
        self,
        module: nn.Module,
        images: Tensor,
        targets: Tensor,
        forward_fn: ModelForwardFn | None,
        warn_once: Callable[[str, str], None],
        colour: bool = False,
        threads: int | None = None,
    ) -> Verify:
        """``verify(regions, ignored, origin_epoch)``: the transplant test against the reference's weights (None when
        those are newer than ``origin_epoch``, or when the test fails: it is warned once and the candidate gets the
        detector's own tests; ``ignored`` None: the regions' windows only, as an alert asks about each region alone,
        whose failure leaves that region named). A class's region takes every probe of
        that class as a donor; a cluster of unlabeled probes, its probes. ``threads``: torch's thread count for its
        passes (the methods' fastest; the drift step around it runs with one)."""

        def verify(regions: tuple[AlertRegion, ...], ignored: Tensor | None, origin_epoch: int) -> FollowTest | None:
            if self._reference is None or targets.numel() != images.shape[0]:
                return None
            epoch, weights = self._reference
            if epoch > origin_epoch >= 0:  # weights newer than the candidate's "before" (a resume): they hold it
                return None
            try:
                with torch_threads(threads):
                    return follow_test(
                        *(module, weights, epoch, images, targets, donor_groups(regions, targets)),
                        alpha=self.alpha,
                        ignored=ignored,
                        colour=colour,
                        forward_fn=forward_fn,
                    )
            except Exception as err:  # noqa: BLE001 - a failed test never kills the run: the detector's way instead
                alone = ignored is None and not colour  # an alert's region asked about alone
                key, what, then = (
                    ("follow_test_region", "an alert region", "the alert names that region without it")
                    if alone
                    else ("follow_test", "a drift candidate", "candidates get the detector's own tests instead")
                )
                warn_once(
                    key,
                    f"AttributionMonitor: the transplant test of {what} failed ({type(err).__name__}: {err}); {then}.",
                )
                return None

        return verify


def donor_groups(
    regions: tuple[AlertRegion, ...], targets: Tensor
) -> list[tuple[tuple[int, int, int, int], list[int]]]:
    """``(box, donors)`` per region (its whole windows, where it has them): every probe of the region's classes, or a
    cluster's own probes."""
    labels = [int(t) for t in targets.tolist()]
    donors = [
        [i for i, c in enumerate(labels) if c in r.classes] if r.classes else list(r.probe_indices) for r in regions
    ]
    return [(r.windows or r.box, d) for r, d in zip(regions, donors, strict=True)]
