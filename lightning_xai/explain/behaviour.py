"""Does the model *follow* what its relevance moved to? The transplant test that confirms a drift candidate.

A change in the maps says where relevance went, not that the model now decides by it. The test asks the model:
something is copied from one probe (the donor) into a probe of another class (the recipient), and the prediction
*follows* when it becomes what the model predicts for the donor itself (and did not predict for the recipient): the
donor's cue need not spell its label, only what the model reads from it. The same transplanted images are shown to
the model as it is now and as it was at the drift reference (its weights kept on the CPU, run through
``torch.func.functional_call``: the training weights are never touched). A shortcut that took over makes the model
follow far more often than at the reference; relevance that moved for a benign reason (a data shift the label does
not follow, training going on) does not. The pairs that changed are compared with an exact one-sided sign test
(McNemar's, with :func:`~lightning_xai.functional.stats.binomial_tail`): no threshold besides its level.

What is transplanted (each at half the level, Bonferroni):

- ``"region"``: the alert's regions (the whole windows each was found in), all at once (a recipient loses its own
  class's cue where the regions place one, as it gains the donor's): a localised cue (a patch, a mark);
- ``"quiet"``: the places both probes ignored at the evaluation before the candidate (per pair, from their own
  maps), at most :data:`MAX_AREA` of the image, the least relevant first: a cue spread over the background (a
  texture, a background colour). Beyond that share the copy would carry the donor's object too, which a model that
  learned it follows for a benign reason;
- ``"colour"`` (for the colour test's candidates): the donor's colours, each channel matched to the donor's mean and
  standard deviation (Reinhard et al., 2001, "Color transfer between images"): a cue in the object's colour.

It cannot see a cue that only works together with the recipient's own content, nor one on the object's shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import torch
from torch import Tensor, nn

from lightning_xai.explain.base import ForwardFn
from lightning_xai.explain.forward import ModelForwardFn, _Call, _call_module, model_device, model_forward
from lightning_xai.explain.guard import training_state_guard
from lightning_xai.functional.shift import cells_to_pixels
from lightning_xai.functional.stats import binomial_tail
from lightning_xai.probes import predict

#: a region to test: ``(box, donor probes)``; the box ``(top, left, bottom, right)`` in input pixels, bottom/right
#: exclusive
Region = tuple[tuple[int, int, int, int], Sequence[int]]

#: at most this many donor/recipient pairs per transplant (an even spread over donors and recipients)
MAX_PAIRS = 128

#: the largest share of the image a transplant copies (the regions' boxes together, the ignored places of a pair):
#: more would move the donor's object too
MAX_AREA = 0.5


@dataclass(frozen=True)
class FollowTest:
    """The transplant test of one candidate: the transplant with the smallest p-value.

    Attributes:
        kind: what was transplanted: ``"region"``, ``"quiet"`` or ``"colour"`` (see the module).
        pairs: donor/recipient pairs shown; ``followed``: how many transplants the model now predicts as it
            predicts the donor (and not as the recipient), ``followed_before``: with the weights of ``before_epoch``.
        gained: pairs followed now but not before; ``lost``: before but not now (the sign test's counts).
        p_value: ``P(Binomial(gained + lost, 1/2) >= gained)``; ``passed``: under the test's level.
    """

    kind: str
    pairs: int
    followed: int
    followed_before: int
    gained: int
    lost: int
    p_value: float
    passed: bool
    before_epoch: int

    def summary(self) -> str:
        """``"the model follows them in 23/40 transplants (2/40 at epoch 2)"``."""
        return (
            f"the model follows them in {self.followed}/{self.pairs} transplants "
            f"({self.followed_before}/{self.pairs} at epoch {self.before_epoch})"
        )


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """The floating-point parameters and buffers of ``model`` (float32 copies on the CPU), as
    ``torch.func.functional_call`` takes them; integer buffers (e.g. BatchNorm's counts) are not needed."""
    named = chain(model.named_parameters(), model.named_buffers())
    return {n: t.detach().to("cpu", torch.float32, copy=True) for n, t in named if t.is_floating_point()}


def transplant_pairs(targets: Tensor, donors: Sequence[int], limit: int = MAX_PAIRS) -> list[tuple[int, int]]:
    """``(donor, recipient)`` for every donor and every probe whose target differs from the donor's; at most
    ``limit``, spread evenly (deterministic)."""
    labels = [int(t) for t in targets.tolist()]
    pairs = [(d, r) for d in donors for r in range(len(labels)) if labels[r] != labels[d]]
    if len(pairs) <= limit:
        return pairs
    step = len(pairs) / limit
    return [pairs[int(i * step)] for i in range(limit)]


def _columns(pairs: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """The donors and the recipients of ``pairs``, each in the pairs' order."""
    return [d for d, _ in pairs], [r for _, r in pairs]


def transplanted(images: Tensor, masks: Tensor, pairs: Sequence[tuple[int, int]]) -> Tensor:
    """Each pair's recipient with ``masks`` (``(H, W)``, or one per pair) copied from the donor."""
    donor, recipient = _columns(pairs)
    return torch.where(masks.unsqueeze(-3), images[donor], images[recipient])


def colour_transferred(images: Tensor, pairs: Sequence[tuple[int, int]]) -> Tensor:
    """Each pair's recipient in its donor's colours: every channel shifted and scaled to the donor's mean and
    standard deviation over the image. The recipient keeps its shapes; a per-channel normalisation commutes with it,
    so it means the same on the model's inputs as on the pixels."""
    donor, recipient = _columns(pairs)
    x, d = images[recipient], images[donor]
    mean_x, std_x = x.mean(dim=(2, 3), keepdim=True), x.std(dim=(2, 3), keepdim=True)
    mean_d, std_d = d.mean(dim=(2, 3), keepdim=True), d.std(dim=(2, 3), keepdim=True)
    return (x - mean_x) / std_x.clamp_min(1e-6) * std_d + mean_d


def box_mask(boxes: Sequence[tuple[int, int, int, int]], size: tuple[int, int]) -> Tensor | None:
    """The union of ``boxes`` as an ``(H, W)`` bool mask; None when it is empty or covers more than
    :data:`MAX_AREA` of the image."""
    mask = torch.zeros(size, dtype=torch.bool)
    for top, left, bottom, right in boxes:
        mask[top:bottom, left:right] = True
    share = float(mask.double().mean())
    return mask if 0.0 < share <= MAX_AREA else None


def quiet_masks(ignored: Tensor, pairs: Sequence[tuple[int, int]], size: tuple[int, int]) -> Tensor:
    """Per pair, the ``(H, W)`` mask of the places both probes ignored (``ignored``: :func:`~lightning_xai.functional.
    shift.ignored_relevance`, ``(P, h, w)``; a bool mask, True where ignored, counts every such place alike), at most
    :data:`MAX_AREA` of the image's pixels, the least relevant to either probe first; equally relevant places in a
    fixed shuffled order (no side of the image first)."""
    if ignored.dtype == torch.bool:
        ignored = torch.zeros(ignored.shape).masked_fill(~ignored, float("inf"))
    donor, recipient = _columns(pairs)
    (h, w), (height, width) = ignored.shape[-2:], size
    both = torch.maximum(ignored[donor], ignored[recipient]).flatten(1)  # inf where either probe looked
    pixels = cells_to_pixels(torch.arange(h * w).view(h, w), size).flatten().bincount(minlength=h * w)  # per cell
    shuffle = torch.randperm(h * w, generator=torch.Generator().manual_seed(0))
    order = shuffle[both[:, shuffle].argsort(dim=1, stable=True)]
    taken = pixels[order].cumsum(dim=1) <= MAX_AREA * height * width
    masks = torch.zeros_like(both, dtype=torch.bool).scatter_(1, order, taken)
    return cells_to_pixels((masks & both.isfinite()).view(-1, h, w), size)


def _with_weights(module: nn.Module, forward_fn: ModelForwardFn | None, state: dict[str, Tensor]) -> ForwardFn:
    """``forward(x) -> logits`` of ``module`` with ``state`` in place of its weights (``torch.func.functional_call``;
    names missing from ``state`` keep the module's own), float32 as :func:`model_forward` gives them."""
    wrapper, device = _Call(module, forward_fn or _call_module), model_device(module)
    swapped = {f"module.{n}": t.to(device, torch.float32) for n, t in state.items()}
    return lambda x: torch.func.functional_call(wrapper, swapped, (x.float(),), strict=False).float()


def follow_test(
    module: nn.Module,
    before: dict[str, Tensor],
    before_epoch: int,
    images: Tensor,
    targets: Tensor,
    regions: Sequence[Region],
    *,
    alpha: float,
    ignored: Tensor | None = None,
    colour: bool = False,
    forward_fn: ModelForwardFn | None = None,
    batch_size: int = 64,
) -> FollowTest | None:
    """Transplant from the regions' donors into the other classes' probes and compare how often the prediction follows
    the donor (becomes the donor's own prediction, which the recipient's was not) with ``module``'s weights now and
    with ``before`` (a :func:`snapshot`): the boxes together and, with ``ignored`` (``(P, h, w)``: each probe's
    :func:`~lightning_xai.functional.shift.ignored_relevance`), the places both probes ignored (:func:`quiet_masks`),
    each at ``alpha / 2``; with ``colour``, the donors' colours at
    ``alpha``. The result of the transplant with the smallest p-value; None when nothing can be tested (no pair,
    boxes too large). The training state is left as found (eval mode, no ``.grad``, RNGs, hooks:
    :func:`~lightning_xai.explain.guard.training_state_guard`)."""
    size = (int(images.shape[-2]), int(images.shape[-1]))
    pairs = transplant_pairs(targets, sorted({d for _, donors in regions for d in donors}))
    if not pairs:
        return None
    device = model_device(module)
    x = images.to(device).float()
    moved: dict[str, Tensor] = {}
    if colour:
        moved["colour"] = colour_transferred(x, pairs)
    else:
        mask = box_mask([box for box, _ in regions], size)
        if mask is not None:
            moved["region"] = transplanted(x, mask.to(device), pairs)
        if ignored is not None and ignored.shape[0] == images.shape[0]:
            masks = quiet_masks(ignored.cpu(), pairs, size)
            if masks.any():  # nothing both ignored: no transplant (nor its share of the level)
                moved["quiet"] = transplanted(x, masks.to(device), pairs)
    if not moved:
        return None
    donors, recipients = _columns(pairs)
    found: list[FollowTest] = []
    with training_state_guard(module, device), model_forward(module, forward_fn) as as_now, torch.no_grad():
        answers = []  # per weight set: the probes' own predictions, then each transplant's
        for forward in (as_now, _with_weights(module, forward_fn, before)):
            own = predict(forward(x))[1]  # one logit: sigmoid > 0.5, not the argmax of one column
            changed = {
                k: torch.cat([predict(forward(part))[1] for part in v.split(batch_size)]) for k, v in moved.items()
            }
            answers.append((own, changed))
        for kind in moved:
            # follows: the transplant's prediction became the donor's own, which the recipient's own was not
            now, then = (
                ((changed[kind] == own[donors]) & (own[recipients] != own[donors])).cpu() for own, changed in answers
            )
            gained, lost = int((now & ~then).sum()), int((then & ~now).sum())
            p_value = binomial_tail(gained + lost, gained, 0.5)
            counts = (len(pairs), int(now.sum()), int(then.sum()), gained, lost, p_value)
            found.append(FollowTest(kind, *counts, p_value <= alpha / len(moved), before_epoch))
    return min(found, key=lambda test: test.p_value)
